//! What a `test:` source shows: the test pattern, or one of the synthetic telescope scenes.

use super::sky::{DeepSky, Moon};
use super::testpattern::TestPattern;
use super::I420;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scene {
    /// Moving boxes, a clock and the stream name: easy to read, easy to compress.
    #[default]
    Pattern,
    /// A noisy deep-sky frame with stars and a nebula (see [`DeepSky`]).
    DeepSky,
    /// The Moon through turbulent air (see [`Moon`]).
    Moon,
}

impl Scene {
    pub const ALL: [Scene; 3] = [Scene::Pattern, Scene::DeepSky, Scene::Moon];

    pub fn as_str(self) -> &'static str {
        match self {
            Scene::Pattern => "pattern",
            Scene::DeepSky => "deepsky",
            Scene::Moon => "moon",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scene| scene.as_str() == s)
    }
}

/// Renders frames of a [`Scene`], each stamped with the timecode strip. The sky scenes
/// carry lookup tables, so they are boxed to keep the enum small.
pub enum SceneRenderer {
    Pattern(TestPattern),
    DeepSky(Box<DeepSky>),
    Moon(Box<Moon>),
}

impl SceneRenderer {
    /// `name` is drawn by the pattern; the sky scenes take it as their random seed, so two
    /// streams show different skies.
    pub fn new(scene: Scene, name: &str, width: usize, height: usize) -> Self {
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        match scene {
            Scene::Pattern => Self::Pattern(TestPattern::new(name, width, height)),
            Scene::DeepSky => Self::DeepSky(Box::new(DeepSky::new(width, height, seed))),
            Scene::Moon => Self::Moon(Box::new(Moon::new(width, height, seed))),
        }
    }

    pub fn size(&self) -> (usize, usize) {
        match self {
            Self::Pattern(p) => p.size(),
            Self::DeepSky(s) => s.size(),
            Self::Moon(m) => m.size(),
        }
    }

    /// Draws the next frame into `out`, stamped with `unix_ms` (wall clock at capture).
    pub fn render(&mut self, unix_ms: u64, out: &mut I420) {
        match self {
            Self::Pattern(p) => p.render(unix_ms, out),
            Self::DeepSky(s) => s.render(unix_ms, out),
            Self::Moon(m) => m.render(unix_ms, out),
        }
    }
}
