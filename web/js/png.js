// Read the text chunks of a PNG (tEXt, iTXt and zTXt), where fluxloom and ComfyUI store the
// `workflow` (UI format) and `prompt` (API format) of the run that made the image.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Map of keyword → text for every text chunk; throws when the bytes are not a PNG. */
export async function pngTextChunks(buffer) {
  const bytes = new Uint8Array(buffer);
  if (!SIGNATURE.every((b, i) => bytes[i] === b)) throw new Error("not a PNG file");
  const view = new DataView(buffer);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  const out = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = latin1.decode(bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    if (type === "tEXt" || type === "zTXt" || type === "iTXt") {
      const nul = data.indexOf(0);
      const key = latin1.decode(data.subarray(0, nul));
      if (type === "tEXt") {
        out[key] = latin1.decode(data.subarray(nul + 1));
      } else if (type === "zTXt") {
        out[key] = latin1.decode(await inflate(data.subarray(nul + 2)));
      } else {
        const compressed = data[nul + 1] === 1;
        let p = nul + 3;
        p = data.indexOf(0, p) + 1; // language tag
        p = data.indexOf(0, p) + 1; // translated keyword
        const text = data.subarray(p);
        out[key] = utf8.decode(compressed ? await inflate(text) : text);
      }
    }
    if (type === "IEND") break;
    pos += 12 + length;
  }
  return out;
}
