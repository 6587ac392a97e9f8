//! Which SIMD code the codecs run, read from the codecs themselves.
//!
//! openh264 builds its x86 assembly only when nasm is installed at the moment cargo compiles
//! it, and cargo then reuses that build for good: a first `cargo build` on a machine without
//! nasm leaves an encoder that runs its C fallbacks, 1.5-3x slower, with no message at all.
//! relay/build.rs refuses such a build; this module lets the relay say at start-up what it
//! actually got, and lets a test fail when the encoder is the C fallback.

use std::ffi::c_int;

extern "C" {
    /// openh264 (codec/common/inc/cpu.h, C linkage). Built with its assembly it returns the
    /// CPU features its code paths use; built without, it is a stub that returns 0.
    fn WelsCPUFeatureDetect(logical_processors: *mut i32) -> u32;
    /// libjpeg-turbo (simd/*/jsimd.c): whether the inverse DCT, the decoder's hot loop, runs
    /// SIMD code on this CPU.
    fn jsimd_can_idct_islow() -> c_int;
}

/// openh264's flags (codec/common/inc/cpu_core.h) for the instruction sets it has code for.
const OPENH264_SETS: [(u32, &str); 8] =
    [(0x08, "SSE2"), (0x10, "SSE3"), (0x200, "SSSE3"), (0x20, "SSE4.1"), (0x400, "SSE4.2"), (0x800, "AVX"), (0x4_0000, "AVX2"), (0x8_0000, "AVX-512")];

/// What the H.264 encoder runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderSimd {
    /// openh264's hand-written assembly, for these instruction sets.
    Assembly(Vec<&'static str>),
    /// openh264's portable C code: either a CPU it has no assembly for, or a build without nasm.
    CFallback,
}

#[allow(unsafe_code)] // Two argument-free queries into C libraries the relay links statically.
pub fn encoder_simd() -> EncoderSimd {
    let mut cores = 0i32;
    // SAFETY: reads CPUID (or does nothing, in the C-only build) and writes one i32 we own.
    let flags = unsafe { WelsCPUFeatureDetect(&mut cores) };
    let sets: Vec<&'static str> = OPENH264_SETS.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, name)| *name).collect();
    if sets.is_empty() {
        EncoderSimd::CFallback
    } else {
        EncoderSimd::Assembly(sets)
    }
}

/// Whether libjpeg-turbo decodes with SIMD, and with which instruction set.
#[allow(unsafe_code)]
pub fn jpeg_simd() -> Option<&'static str> {
    // SAFETY: no arguments; it reads CPU features once and caches them (thread-local).
    if unsafe { jsimd_can_idct_islow() } == 0 {
        return None;
    }
    // libjpeg-turbo prefers AVX2 where the CPU has it (unless JSIMD_FORCESSE2 is set).
    #[cfg(target_arch = "x86_64")]
    {
        let forced_sse2 = std::env::var("JSIMD_FORCESSE2").is_ok_and(|v| v == "1");
        Some(if std::arch::is_x86_feature_detected!("avx2") && !forced_sse2 { "AVX2" } else { "SSE2" })
    }
    #[cfg(not(target_arch = "x86_64"))]
    Some("yes")
}

/// One line for the start-up log.
pub fn describe() -> String {
    let encoder = match encoder_simd() {
        EncoderSimd::Assembly(sets) => format!("openh264 assembly ({})", sets.join(" ")),
        EncoderSimd::CFallback => "openh264 C fallback (no assembly: SLOW)".to_owned(),
    };
    let jpeg = jpeg_simd().map_or_else(|| "libjpeg-turbo without SIMD (SLOW)".to_owned(), |s| format!("libjpeg-turbo {s}"));
    format!("H.264 encoder: {encoder}; JPEG decoder: {jpeg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trap this guards: openh264 compiled before nasm was installed runs its C code.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_encoder_and_the_jpeg_decoder_run_simd_code() {
        match encoder_simd() {
            EncoderSimd::Assembly(sets) => assert!(sets.contains(&"SSE2"), "{sets:?}"),
            EncoderSimd::CFallback => panic!("openh264 was built without its assembly (nasm missing when it was compiled): {}", describe()),
        }
        assert!(jpeg_simd().is_some(), "{}", describe());
    }
}
