//! Summing gradients over the devices of one node (`batch.gradient_sync: AllReduce`): every
//! device holds its own replica and optimiser, and applies the same summed gradients.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::cluster::{FlatGrads, flatten_grads};

/// Sums one flat tensor per device onto every device.
pub trait DeviceAllReduce<B: Backend>: Send + Sync {
    /// `per_device[d]` lies on device `d`; returns the sum over all of them, one copy on
    /// each device, in the same order.
    fn all_reduce(&self, per_device: Vec<Tensor<B, 1>>) -> Result<Vec<Tensor<B, 1>>, String>;
    /// How the sum is taken, for messages.
    fn describe(&self) -> &'static str;
}

/// The sum taken on the first device, in device order, and copied to the others: works on
/// every backend (and adds in the same order as [`GradientSync::MainDevice`], so with f32
/// gradients both train the same bits when there is no accumulation).
///
/// [`GradientSync::MainDevice`]: crate::experiment::GradientSync::MainDevice
#[derive(Debug, Clone, Copy, Default)]
pub struct ThroughFirstDevice;

impl<B: Backend> DeviceAllReduce<B> for ThroughFirstDevice {
    fn all_reduce(&self, per_device: Vec<Tensor<B, 1>>) -> Result<Vec<Tensor<B, 1>>, String> {
        let devices: Vec<B::Device> = per_device.iter().map(Tensor::device).collect();
        let first = devices.first().ok_or("no device to sum over")?.clone();
        let sum = per_device
            .into_iter()
            .map(|t| t.to_device(&first))
            .reduce(|a, b| a + b)
            .ok_or("no device to sum over")?;
        Ok(devices.iter().map(|d| sum.clone().to_device(d)).collect())
    }

    fn describe(&self) -> &'static str {
        "through the first device"
    }
}

/// NCCL's all-reduce through burn's `DistributedBackend` (CUDA): each device's call runs on
/// a thread of its own, as NCCL's ranks must call together. The flat tensors are built
/// before any call, so every rank calls; should a call itself fail on one GPU, NCCL leaves
/// the others waiting: stop the run and resume it from its last checkpoint.
#[cfg(feature = "nccl")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Nccl;

#[cfg(feature = "nccl")]
impl<B: burn::tensor::backend::distributed::DistributedBackend> DeviceAllReduce<B> for Nccl {
    fn all_reduce(&self, per_device: Vec<Tensor<B, 1>>) -> Result<Vec<Tensor<B, 1>>, String> {
        use burn::prelude::DeviceOps;
        use burn::tensor::TensorPrimitive;
        use burn::tensor::backend::distributed::ReduceOperation;
        let ids: Vec<_> = per_device.iter().map(|t| t.device().to_id()).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = per_device
                .into_iter()
                .map(|t| {
                    let ids = ids.clone();
                    scope.spawn(move || {
                        let out =
                            B::all_reduce(t.into_primitive().tensor(), ReduceOperation::Sum, ids)
                                .resolve();
                        Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(out))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| "an NCCL all-reduce panicked".to_string())
                })
                .collect()
        })
    }

    fn describe(&self) -> &'static str {
        "NCCL"
    }
}

/// Every device's gradients (of its replica in `models`) summed over the devices with
/// `reduce`, back as one gradient set per device. The flat layout depends on the module only
/// ([`FlatGrads`]): a device whose data reached fewer parameters (a VQA-only batch leaves the
/// mask decoder without gradients) still lines up with the others.
pub(crate) fn all_reduce_grads<B, M>(
    reduce: &dyn DeviceAllReduce<B::InnerBackend>,
    models: &[M],
    grads: Vec<GradientsParams>,
) -> Result<Vec<GradientsParams>, String>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut flats: Vec<FlatGrads<B>> = models
        .iter()
        .zip(grads)
        .map(|(model, grads)| flatten_grads::<B, M>(model, grads))
        .collect::<Result<_, _>>()?;
    let len = flats.first().map(FlatGrads::len).unwrap_or(0);
    if flats.iter().any(|f| f.len() != len) {
        return Err("the devices' replicas have different trained parameters".into());
    }
    let tensors = flats
        .iter_mut()
        .map(|f| Tensor::cat(std::mem::take(&mut f.parts), 0))
        .collect();
    let sums = reduce.all_reduce(tensors)?;
    if sums.len() != models.len() {
        return Err(format!(
            "the all-reduce returned {} sums for {} devices",
            sums.len(),
            models.len()
        ));
    }
    models
        .iter()
        .zip(flats)
        .zip(sums)
        .map(|((model, flat), summed)| flat.unflatten(model, &summed))
        .collect()
}
