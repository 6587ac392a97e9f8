// <scopecast-player src="http://scope.local:8889/telescope"></scopecast-player>
//
// Import this module (from the relay: /static/scopecast-player.js) to register the element.
// Attributes: src (the stream's URL), or whep (a WHEP endpoint on any server, used as it is:
// Cloudflare Stream's .../webRTC/play, MediaMTX, an SFU), token, fallback, controls, autoplay, overlay, rendition (one to pin, or auto); "false"
// or "off" turns a default-on one off. The sky tools: zoom, fullscreen (on), snapshot (on),
// reticle (or reticle="circles"), histogram, age (on), focus, stills (or stills="8").
// It also exports mount(element, options), returning a handle whose destroy() ends the WHEP
// session.
import init, { mount } from "./player/scopecast_client.js";

export const ready = init();

// The player's stylesheet, once per document, from next to this module.
function addStyles() {
  const href = new URL("./player.css", import.meta.url).href;
  if (![...document.styleSheets].some((s) => s.href === href) && !document.querySelector(`link[href="${href}"]`)) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    document.head.append(link);
  }
}

const ATTRIBUTES = [
  "src", "whep", "token", "fallback", "controls", "autoplay", "overlay", "rendition",
  "zoom", "fullscreen", "snapshot", "reticle", "histogram", "age", "focus", "stills",
];

export class ScopecastPlayer extends HTMLElement {
  static get observedAttributes() { return ATTRIBUTES; }

  connectedCallback() {
    // Moving the element fires disconnected then connected: keep the session it has.
    clearTimeout(this._teardown);
    if (!this._handle && !this._mounting) this._mount();
  }

  disconnectedCallback() {
    this._teardown = setTimeout(() => { if (!this.isConnected) this._unmount(); }, 0);
  }

  attributeChangedCallback(_name, old, value) {
    if (old !== value && (this._handle || this._mounting)) { this._unmount(); this._mount(); }
  }

  async _mount() {
    // Each mount gets a ticket; an unmount (or a newer mount) while this one waits voids it.
    const ticket = (this._ticket = (this._ticket || 0) + 1);
    this._mounting = true;
    await ready;
    if (ticket !== this._ticket || !this.isConnected) return;
    this._mounting = false;
    const options = {};
    for (const name of ATTRIBUTES) if (this.hasAttribute(name)) options[name] = this.getAttribute(name);
    addStyles();
    try {
      this._handle = mount(this, options);
    } catch (e) {
      this.textContent = String(e);
    }
  }

  _unmount() {
    this._ticket = (this._ticket || 0) + 1;
    this._mounting = false;
    if (this._handle) { this._handle.destroy(); this._handle.free(); this._handle = null; }
  }
}

if (!customElements.get("scopecast-player")) customElements.define("scopecast-player", ScopecastPlayer);

export { mount };
