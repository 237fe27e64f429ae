// A custom node pack's frontend extension: the browser test checks that it was loaded.
import { app } from "../../scripts/app.js";
import { greeting } from "./lib/greeting.js";

app.registerExtension({
  name: "tests.webEcho",
  async setup() {
    window.__webEchoLoaded = greeting();
  },
});
