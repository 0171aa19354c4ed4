// halley.js as an ES module: `import Halley from "https://hub.example/halley.mjs"`.
// halley.js itself stays one plain file (no build step); this wrapper runs it and exports the
// class, and tells it where it came from (import.meta.url), so `new Halley(key)` connects to
// the hub that served it.
import "./halley.js";

const Halley = globalThis.Halley;
if (!Halley.defaultOrigin) Halley.defaultOrigin = new URL(import.meta.url).origin;

export default Halley;
export { Halley };
