// ComfyUI's binary websocket frames of live previews (server/events.py builds them): a big-endian
// uint32 event type, then
// - type 1 (PREVIEW_IMAGE): a uint32 image format (1 JPEG, 2 PNG) and the image; no node named;
// - type 4 (PREVIEW_IMAGE_WITH_METADATA): a uint32 length, that much JSON (node_id, prompt_id,
//   display_node_id, image_type), and the image.
// The canvas asks for type 4 in its `feature_flags`; type 1 is read too (it goes to the running node).

export const PREVIEW_IMAGE = 1;
export const PREVIEW_IMAGE_WITH_METADATA = 4;

/** {blob, nodeId, promptId} of a preview frame; null for any other binary message. */
export function parsePreviewFrame(buffer) {
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength < 8) return null;
  const view = new DataView(buffer);
  const type = view.getUint32(0);
  if (type === PREVIEW_IMAGE) {
    const mime = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
    return { blob: new Blob([buffer.slice(8)], { type: mime }), nodeId: null, promptId: null };
  }
  if (type === PREVIEW_IMAGE_WITH_METADATA) {
    const length = view.getUint32(4);
    if (8 + length > buffer.byteLength) return null;
    let meta;
    try {
      meta = JSON.parse(new TextDecoder().decode(buffer.slice(8, 8 + length)));
    } catch {
      return null;
    }
    const blob = new Blob([buffer.slice(8 + length)], { type: meta.image_type || "image/jpeg" });
    return { blob, nodeId: meta.display_node_id ?? meta.node_id ?? null, promptId: meta.prompt_id ?? null };
  }
  return null;
}
