//! Measures candle's CPU matmul per weight dtype for SmolLM2-sized projections,
//! to choose between dequantizing at load and a quantized kernel.
//! `cargo run --release -p pragma-model --example matmul_kernels`

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use pragma_model::quant::{QuantKind, QuantWeight};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    // pragma's decode kernels (f32 activations on the file's blocks), one row of x.
    for (rows, cols) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
        for dt in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let w = Tensor::randn(0f32, 1.0, (rows, cols), &dev)?;
            let q = QTensor::quantize(&w, dt)?;
            let kind = QuantKind::from_ggml(dt).expect("kind");
            let qw = QuantWeight::new(kind, rows, cols, q.data()?.into_owned()).expect("qw");
            let x: Vec<f32> = (0..cols).map(|i| (i as f32).sin()).collect();
            let reps = (2e8 as usize / (rows * cols)).max(3);
            qw.matmul(&x, 1);
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(qw.matmul(&x, 1));
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let bytes = (rows * cols) as f64 * if dt == GgmlDType::Q4_1 { 0.625 } else { 1.0625 };
            println!(
                "pragma {dt:?} [{rows}x{cols}] x 1 row: {:8.1} us  {:5.2} Gweights/s  {:5.1} GB/s",
                s * 1e6,
                (rows * cols) as f64 / s / 1e9,
                bytes / s / 1e9
            );
        }
    }
    for (rows, k, n) in [
        (1usize, 576usize, 1536usize),
        (1, 1536, 576),
        (16, 576, 1536),
        (1024, 576, 1536),
    ] {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?;
        let flops = 2.0 * (rows * k * n) as f64;
        let wt = w.t()?.contiguous()?;
        let reps = if rows == 1 {
            2000
        } else if rows == 16 {
            200
        } else {
            10
        };
        let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> candle_core::Result<f64> {
            f()?;
            let t = Instant::now();
            for _ in 0..reps {
                f()?;
            }
            Ok(t.elapsed().as_secs_f64() / reps as f64)
        };
        let t = time(&|| x.matmul(&wt))?;
        println!(
            "[{rows}x{k}] @ [{k}x{n}]  f32: {:8.1} us  {:6.1} GFLOP/s",
            t * 1e6,
            flops / t / 1e9
        );
        for dt in [
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::F16,
        ] {
            let q = QMatMul::from_qtensor(QTensor::quantize(&w, dt)?)?;
            let t = time(&|| q.forward(&x))?;
            println!(
                "{:>28} {dt:?}: {:8.1} us  {:6.1} GFLOP/s",
                "",
                t * 1e6,
                flops / t / 1e9
            );
        }
    }
    Ok(())
}
