//! The Scopecast player.
//!
//! Pure logic, tested natively with `cargo test`: the fallback [`ladder`], [`backoff`], the
//! [`stall`] rule, WHEP [`headers`] and the [`sky`] tools' arithmetic. The browser layer
//! (`web`, wasm32 only) is thin: it turns peer-connection, fetch and DOM events into ladder
//! events and carries out its commands.

pub mod backoff;
pub mod headers;
pub mod ladder;
pub mod sdpfrag;
pub mod sky;
pub mod stall;

#[cfg(target_arch = "wasm32")]
mod web;
