//! What the focus view's source costs per frame: its region decoded alone
//! (`media/jpeg_region.rs`) against the whole frame decoded and the region cropped (what the
//! focus encoder did before), both measured in the same run on the same frames of the
//! camera-like corpus at 720p and 4K. The region is the player's default (256x256 around a
//! click) at the top, the middle and the bottom of the picture: libjpeg-turbo still reads
//! the compressed rows above the region, so the bottom is the dearest.
//!
//!
//! And the same idea for the stream's small renditions (`target/bench/reduced.md`): what the
//! lead's thread pays per frame when only a small rendition is watched, the JPEG decoded at
//! full size and scaled down against decoded at the DCT's reduction for it.
//!
//! `cargo run --release -p scopecast-tests --bin focus-bench [-- --frames N --runs R]`

use scopecast::media::jpeg::JpegDecoder;
use scopecast::media::jpeg_region::RegionDecoder;
use scopecast::media::scale::Scaler;
use scopecast::media::I420;
use scopecast_tests::bench::{median, thread_cpu};
use scopecast_tests::corpus;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<usize>().ok());
    let frames = arg("--frames").unwrap_or(40);
    let runs = arg("--runs").unwrap_or(5);
    let sky = ["deepsky".to_owned(), "moon".to_owned()];
    let mut inputs = corpus::inputs(frames, 1280, 720, &sky)?;
    inputs.extend(corpus::inputs(frames.div_ceil(2), 3840, 2160, &sky)?);

    let mut md = format!(
        "CPU ms per frame on the focus encoder's thread, medians of {runs} runs of {frames} frames ({} at 4K); a 256x256 region.\n\n",
        frames.div_ceil(2)
    );
    md.push_str("| input | size | full decode + crop | region at top | ratio | middle | ratio | bottom | ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for input in &inputs {
        let (w, h) = (input.width, input.height);
        let at = |y: usize| ((w / 2 - 128) & !1, y & !1, 256, 256);
        let regions = [at(0), at(h / 2 - 128), at(h - 256)];
        let mut full = Vec::new();
        let mut alone: [Vec<f64>; 3] = Default::default();
        for _ in 0..runs {
            // The whole frame decoded, then the region copied out.
            let (mut decoder, mut picture) = (JpegDecoder::new()?, I420::new(2, 2));
            full.push(per_frame(&input.jpegs, |j, out| {
                decoder.decode(j, 1, &mut picture)?;
                out.crop_from(&picture, regions[1]);
                Ok(())
            })?);
            for (i, region) in regions.into_iter().enumerate() {
                // As the focus encoder does: the header through the stream's decoder, then the region.
                let (mut header, mut d) = (JpegDecoder::new()?, RegionDecoder::new()?);
                alone[i].push(per_frame(&input.jpegs, |j, out| {
                    let info = header.info(j)?;
                    Ok(d.decode(j, &info, region, out)?)
                })?);
            }
        }
        let full = median(&full);
        let [top, middle, bottom] = alone.map(|v| median(&v));
        md.push_str(&format!(
            "| {} | {w}x{h} | {full:.2} | {top:.2} | {:.1}x | {middle:.2} | {:.1}x | {bottom:.2} | {:.1}x |\n",
            input.name,
            full / top,
            full / middle,
            full / bottom
        ));
        eprintln!("{} {w}x{h}: full {full:.2} ms, region {top:.2} / {middle:.2} / {bottom:.2} ms", input.name);
    }
    print!("{md}");
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/focus.md", md)?;
    let reduced = reduced(&inputs, runs)?;
    print!("\n{reduced}");
    std::fs::write("target/bench/reduced.md", reduced)?;
    Ok(())
}

/// The lead's decode for followers of 640x360 and 320x180 alone: full size then scaled, or
/// reduced in the DCT (then scaled the rest of the way, as the follower does).
fn reduced(inputs: &[corpus::Input], runs: usize) -> anyhow::Result<String> {
    let mut md = format!("CPU ms per frame for the followers' picture, medians of {runs} runs; the lead's own rendition unwatched.\n\n");
    md.push_str("| input | source | follower | full decode + scale | DCT reduction + scale | ratio |\n| --- | --- | --- | --- | --- | --- |\n");
    for input in inputs {
        for (fw, fh) in [(640, 360), (320, 180)] {
            let (mut full, mut small) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                for (times, reduce) in [(&mut full, false), (&mut small, true)] {
                    let (mut decoder, mut decoded, mut scaler) = (JpegDecoder::new()?, I420::new(2, 2), Scaler::default());
                    times.push(per_frame(&input.jpegs, |j, out| {
                        let denom = if reduce { decoder.info(j)?.reduction_for(fw, fh) } else { 1 };
                        decoder.decode(j, denom, &mut decoded)?;
                        scaler.scale(&decoded, out, fw, fh)?;
                        Ok(())
                    })?);
                }
            }
            let (full, small) = (median(&full), median(&small));
            md.push_str(&format!("| {} | {}x{} | {fw}x{fh} | {full:.2} | {small:.2} | {:.1}x |\n", input.name, input.width, input.height, full / small));
        }
    }
    Ok(md)
}

/// Thread CPU ms per frame of `work` over the frames.
fn per_frame(jpegs: &[Vec<u8>], mut work: impl FnMut(&[u8], &mut I420) -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut out = I420::new(2, 2);
    let before = thread_cpu();
    for jpeg in jpegs {
        work(jpeg, &mut out)?;
    }
    Ok((thread_cpu() - before).as_secs_f64() * 1000.0 / jpegs.len() as f64)
}
