// One colour per socket type, used for slots and links (close to ComfyUI's palette so its users
// read a graph at a glance).
import { LGraphCanvas } from "@comfyorg/litegraph";

export const TYPE_COLORS = {
  CLIP_L: "#FFD500",
  CLIP: "#FFD500",
  T5: "#E8A33D",
  FLUX_MODEL: "#B39DDB",
  VAE: "#FF6E6E",
  CONDITIONING: "#FFA931",
  LATENT: "#FF9CF9",
  IMAGE: "#64B5F6",
  INT: "#29699C",
  FLOAT: "#7FB37F",
  STRING: "#77FF77",
  BOOLEAN: "#AA88CC",
};

export function applyTypeColors(canvas) {
  Object.assign(LGraphCanvas.link_type_colors, TYPE_COLORS);
  Object.assign(canvas.default_connection_color_byType, TYPE_COLORS);
}
