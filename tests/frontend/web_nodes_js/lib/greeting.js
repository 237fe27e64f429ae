export function greeting() {
  return "hello from a custom node's web directory";
}
