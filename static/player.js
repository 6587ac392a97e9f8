// A plain-JavaScript WHEP player: lists the relay's streams and plays one. The Leptos player
// replaces it; until then it is what `/` and `/{stream}/` serve.

const $ = (id) => document.getElementById(id);
const player = { pc: null, sessionUrl: null, stream: null, state: "idle" };
window.scopecast = player; // For tests and debugging.

// A relay with a token is opened as /?token=...; the token goes along with every request.
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: `Bearer ${token}` } : {};

function setState(state, detail = "") {
  player.state = state;
  $("state").textContent = detail ? `${state}: ${detail}` : state;
  $("state").dataset.state = state;
}

async function listStreams() {
  const res = await fetch("/api/v1/streams", { headers: auth });
  if (!res.ok) throw new Error(`stream list: HTTP ${res.status}`);
  return (await res.json()).streams;
}

// Waits for ICE gathering, capped: host candidates come at once, and a relay on the LAN needs
// nothing more.
function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

// The camera's own state, from the relay's event stream: the picture may be live over
// WebRTC while the camera behind it is offline (the last frame stays on screen).
function watchSource(stream) {
  if (player.events) player.events.close();
  const q = token ? `?token=${encodeURIComponent(token)}` : "";
  const events = new EventSource(`/api/v1/streams/${encodeURIComponent(stream)}/events${q}`);
  events.addEventListener("state", (ev) => {
    const s = JSON.parse(ev.data);
    player.source = s.state;
    const el = $("source");
    el.dataset.source = s.state;
    el.textContent = s.state === "offline" ? `camera offline: ${s.last_error || ""}` : `camera ${s.state}`;
  });
  player.events = events;
}

async function play(stream) {
  await hangUp();
  player.stream = stream;
  watchSource(stream);
  setState("connecting");
  const pc = new RTCPeerConnection();
  player.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    const video = $("video");
    video.muted = true; // As a property: autoplay is blocked otherwise.
    video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    if (ev.receiver.jitterBufferTarget !== undefined) ev.receiver.jitterBufferTarget = 0;
    video.play().catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === "connected") setState("live");
    else if (s === "failed" || s === "disconnected") setState(s);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 1000);
  const res = await fetch(`/${encodeURIComponent(stream)}/whep`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...auth },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    let detail = `HTTP ${res.status}`;
    try { detail = (await res.json()).detail || detail; } catch (_) {}
    setState("failed", detail);
    return;
  }
  player.sessionUrl = new URL(res.headers.get("Location"), location.href).href;
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
}

async function hangUp() {
  const { pc, sessionUrl } = player;
  player.pc = null;
  player.sessionUrl = null;
  if (pc) pc.close();
  if (sessionUrl) await fetch(sessionUrl, { method: "DELETE", headers: auth, keepalive: true }).catch(() => {});
}

// Ends the session on the relay when the page goes away.
addEventListener("pagehide", () => {
  if (player.sessionUrl) fetch(player.sessionUrl, { method: "DELETE", headers: auth, keepalive: true });
});

function showInfo() {
  const v = $("video");
  if (v.videoWidth) $("info").textContent = `${player.stream} · ${v.videoWidth}x${v.videoHeight}`;
}
setInterval(showInfo, 1000);

async function main() {
  try {
    const streams = await listStreams();
    const fromPath = decodeURIComponent(location.pathname.split("/").filter(Boolean)[0] || "");
    const wanted = new URLSearchParams(location.search).get("stream") || fromPath;
    const chosen = streams.find((s) => s.name === wanted) || streams[0];
    const nav = $("streams");
    for (const s of streams) {
      const a = document.createElement("a");
      a.href = `/${encodeURIComponent(s.name)}/${location.search}`;
      a.textContent = s.name;
      if (chosen && s.name === chosen.name) a.className = "current";
      nav.append(a);
    }
    if (chosen) await play(chosen.name);
    else setState("failed", "no streams configured");
  } catch (e) {
    setState("failed", String(e));
  }
}
main();
