//! Times `x[n, k] . W^T` for SmolLM2- and Llama-3.2-1B-sized projections three ways, per
//! weight dtype and activation rows `n`: pragma's row kernels on the file's blocks
//! (`QuantWeight::matmul_rows`, the decode path), dequantized tiles into an f32 GEMM
//! (`QuantWeight::matmul_tiled`, the prefill path) and candle's f32 GEMM on weights
//! dequantized at load (the f32 mode). It is how `QuantWeight::worth_it` was chosen.
//! `cargo run --release -p pragma-model --example matmul_kernels`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use pragma_model::quant::QuantWeight;

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    println!("| weight [out x in] | dtype | rows n | row kernels | tiles + GEMM | f32 GEMM |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (out, k) in [(1536usize, 576usize), (576, 1536), (4096, 2048)] {
        let w = Tensor::randn(0f32, 1.0, (out, k), &dev)?;
        let wt = w.t()?;
        for dt in [
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::F16,
        ] {
            if !k.is_multiple_of(dt.block_size()) {
                continue; // K-quants need rows of 256 (SmolLM2's 576 are not)
            }
            let q = QTensor::quantize(&w, dt)?;
            let qw = QuantWeight::new(dt, out, k, q.data()?.into_owned()).expect("qw");
            for n in [1usize, 4, 8, 16, 64, 512] {
                let x: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let xt = Tensor::from_vec(x.clone(), (n, k), &dev)?;
                let reps = (4e8 as usize / (2 * n * k * out)).clamp(3, 2000);
                let time = |f: &dyn Fn()| -> f64 {
                    f();
                    let t = Instant::now();
                    for _ in 0..reps {
                        f();
                    }
                    t.elapsed().as_secs_f64() / reps as f64 * 1e6
                };
                let rows = time(&|| {
                    std::hint::black_box(qw.matmul_rows(&x, n));
                });
                let tiles = time(&|| {
                    std::hint::black_box(qw.matmul_tiled(&x, n));
                });
                let dense = time(&|| {
                    std::hint::black_box(xt.matmul(&wt).expect("mm"));
                });
                println!(
                    "| [{out}x{k}] | {dt:?} | {n} | {rows:.1} us | {tiles:.1} us | {dense:.1} us |"
                );
            }
        }
    }
    Ok(())
}
