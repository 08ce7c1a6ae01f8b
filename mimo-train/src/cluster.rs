//! Data parallel training over several processes or machines ("nodes"), with gradients
//! exchanged through burn's tensor data service (`burn-communication`, over WebSocket).
//!
//! Every node runs the same experiment on its own share of each global batch: node `rank`
//! of `batch.nodes` takes the samples `rank × devices × per_device ..` of every micro-batch
//! span. Once per optimiser step a node flattens its accumulated gradients and step
//! statistics into one f32 tensor, exposes it on its data service and downloads every other
//! node's; each node sums the tensors in rank order, so every replica gets bit-identical
//! gradients, takes the same optimiser step and stays identical to the others without any
//! parameter broadcast. One process per GPU on one machine (PyTorch DDP's layout) is the
//! same thing with every address on `127.0.0.1`.
//!
//! Why not `burn-collective`'s global all-reduce: in burn 0.21.0 it completes only once per
//! registration. `SyncService::sync` (burn-collective 0.21.0,
//! `src/global/node/sync.rs`, the `syncing_peers.clear()` in its wait loop) clears a copy of
//! the list of synced peers rather than the list, so from the second all-reduce on the list
//! never equals the node set and every node waits forever (two processes, two all-reduces
//! reproduce it). The data service it is built on works, and is what this module uses.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use burn_communication::data_service::{TensorDataServer, TensorDataService, TensorTransferId};
use burn_communication::websocket::{WebSocket, WsServer};
use burn_communication::{Address, ProtocolServer};
use tokio_util::sync::CancellationToken;

use crate::step::MimoStepStats;

/// This process's place in a multi-node run (the experiment's `batch.nodes` > 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// This node's rank, `0 .. batch.nodes`: which share of every global batch it trains on.
    pub rank: usize,
    /// Every node's address in rank order, as the other nodes reach it, e.g.
    /// `ws://10.0.0.1:3001`; this node's data service listens on the port of its own entry.
    pub nodes: Vec<String>,
}

/// `ws://host:port[/…]` → `host:port`.
fn host_port(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("node address `{url}` must look like ws://HOST:PORT"))?;
    let hp = rest.split('/').next().unwrap_or_default();
    match hp.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(hp.to_string()),
        _ => Err(format!(
            "node address `{url}` must look like ws://HOST:PORT"
        )),
    }
}

/// How long a node waits for the others' data services to accept connections.
const CONNECT_WAIT: Duration = Duration::from_secs(600);
/// How long a node that has finished waits for the others to download its last tensors.
const LINGER: Duration = Duration::from_secs(120);

/// A multi-node run's gradient exchange, for this process.
pub(crate) struct Cluster<I: Backend> {
    pub(crate) rank: usize,
    pub(crate) nodes: usize,
    addresses: Vec<Address>,
    service: Arc<TensorDataService<I, WebSocket>>,
    runtime: tokio::runtime::Runtime,
    cancel: CancellationToken,
    round: AtomicU64,
}

impl<I: Backend> Cluster<I> {
    /// Starts this node's data service, waits until every other node's accepts connections
    /// and checks that all nodes run the same experiment (`fingerprint`) from the same
    /// optimiser step (`step`: 0 for a new run, the checkpoint's step when resuming).
    pub(crate) fn join(
        node: &ClusterNode,
        nodes: usize,
        fingerprint: u64,
        step: usize,
    ) -> Result<Self, String> {
        if node.nodes.len() != nodes {
            return Err(format!(
                "{} node address(es) given (--nodes-at) but the experiment's `batch.nodes` is \
                 {nodes}",
                node.nodes.len()
            ));
        }
        if node.rank >= nodes {
            return Err(format!(
                "node rank {} is out of range: the experiment's `batch.nodes` is {nodes} \
                 (ranks 0..{})",
                node.rank,
                nodes - 1
            ));
        }
        let mut host_ports = Vec::new();
        for url in &node.nodes {
            host_ports.push(host_port(url)?);
        }
        let port: u16 = host_ports[node.rank]
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_default();
        // A clear error for a port in use (the server would only log it).
        drop(
            std::net::TcpListener::bind(("0.0.0.0", port))
                .map_err(|e| format!("node {}: cannot listen on port {port}: {e}", node.rank))?,
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the node's network runtime: {e}"))?;
        let cancel = CancellationToken::new();
        let service = Arc::new(TensorDataService::<I, WebSocket>::new(cancel.clone()));
        let server = WsServer::new(port)
            .route_tensor_data_service(service.clone())
            .serve({
                let cancel = cancel.clone();
                async move { cancel.cancelled().await }
            });
        runtime.spawn(server);
        // Wait for every node's service (including this one's) to accept connections.
        let start = Instant::now();
        for hp in &host_ports {
            loop {
                if std::net::TcpStream::connect(hp.as_str()).is_ok() {
                    break;
                }
                if start.elapsed() > CONNECT_WAIT {
                    cancel.cancel();
                    return Err(format!(
                        "node {}: no node answered at {hp} within {} s (is it started, and is \
                         the address reachable?)",
                        node.rank,
                        CONNECT_WAIT.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let mut addresses = Vec::new();
        for url in &node.nodes {
            addresses.push(Address::from_str(url)?);
        }
        let cluster = Self {
            rank: node.rank,
            nodes,
            addresses,
            service,
            runtime,
            cancel,
            round: AtomicU64::new(0),
        };
        // Handshake: every node must run the same experiment from the same step (16- and
        // 24-bit pieces: exact in f32).
        let mine = [
            (fingerprint & 0xffff) as f32,
            ((fingerprint >> 16) & 0xffff) as f32,
            ((fingerprint >> 32) & 0xffff) as f32,
            ((fingerprint >> 48) & 0xffff) as f32,
            (step & 0xff_ffff) as f32,
            (step >> 24) as f32,
        ];
        let parts = cluster.gather(TensorData::new(mine.to_vec(), [mine.len()]))?;
        for (r, d) in parts.iter().enumerate() {
            let theirs: Vec<f32> = d
                .to_vec()
                .map_err(|e| format!("node {r}'s handshake: {e:?}"))?;
            if theirs.len() != mine.len() || theirs[..4] != mine[..4] {
                cluster.cancel.cancel();
                return Err(format!(
                    "node {r} runs a different experiment than node {} (all nodes must run \
                     the same resolved experiment file)",
                    node.rank
                ));
            }
            if theirs[4..] != mine[4..] {
                cluster.cancel.cancel();
                let at = |v: &[f32]| v[4] as usize + ((v[5] as usize) << 24);
                return Err(format!(
                    "node {r} starts at optimiser step {}, node {} at step {step}: every node \
                     must resume from the same step (remove the newer checkpoints/step-N of \
                     the nodes ahead, or start all over)",
                    at(&theirs),
                    node.rank
                ));
            }
        }
        Ok(cluster)
    }

    /// Exposes `mine` and downloads every other node's tensor of the same round: all nodes'
    /// data in rank order.
    fn gather(&self, mine: TensorData) -> Result<Vec<TensorData>, String> {
        let id = TensorTransferId::from(self.round.fetch_add(1, Ordering::SeqCst));
        let service = self.service.clone();
        let addresses = self.addresses.clone();
        let (rank, nodes) = (self.rank, self.nodes);
        self.runtime.block_on(async move {
            service
                .expose_data(mine.clone(), (nodes - 1) as u32, id)
                .await;
            // burn's data service can miss a wake-up (a request that arrives just before the
            // tensor it asks for); waking its waiters now and then while this round lasts
            // makes that a delay instead of a hang.
            let nudge = {
                let service = service.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        service.new_tensor_notify.notify_waiters();
                    }
                })
            };
            let mut out = Vec::with_capacity(nodes);
            for (r, address) in addresses.into_iter().enumerate() {
                if r == rank {
                    out.push(mine.clone());
                    continue;
                }
                let service = service.clone();
                // A task, so that a lost connection (which burn's client panics on) is an
                // error here.
                let got = tokio::spawn(async move { service.download_tensor(address, id).await })
                    .await
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        format!("node {rank}: lost the connection to node {r} (did it stop?)")
                    })?;
                out.push(got);
            }
            nudge.abort();
            Ok(out)
        })
    }

    /// Sums `grads` (those of `model`'s parameters) and `stats` over all nodes; the gradients
    /// keep their dtypes.
    pub(crate) fn all_reduce<B, M>(
        &self,
        model: &M,
        grads: GradientsParams,
        stats: &mut MimoStepStats,
    ) -> Result<GradientsParams, String>
    where
        B: AutodiffBackend<InnerBackend = I>,
        M: AutodiffModule<B>,
    {
        let mut flat = flatten_grads::<B, M>(model, grads)?;
        let mut parts = std::mem::take(&mut flat.parts);
        let tail = [
            stats.loss,
            stats.ce,
            stats.bce,
            stats.dice,
            stats.correct_tokens,
            stats.tokens,
            stats.intersection,
            stats.union,
            stats.batch_size as f64,
        ];
        let tail_vals: Vec<f32> = tail.iter().map(|&v| v as f32).collect();
        let device = parts.first().map(|p| p.device()).unwrap_or_default();
        parts.push(Tensor::from_data(
            TensorData::new(tail_vals, [tail.len()]),
            &device,
        ));
        let all = self.gather(Tensor::cat(parts, 0).into_data())?;
        let want = flat.len() + tail.len();
        if let Some((rank, d)) = all
            .iter()
            .enumerate()
            .find(|(_, d)| d.num_elements() != want)
        {
            return Err(format!(
                "node {rank} sent {:?} gradient values, this node has {want}: do all nodes \
                 train the same parameters?",
                d.shape
            ));
        }
        // Summed in rank order on every node: the same bits everywhere.
        let mut summed: Option<Tensor<I, 1>> = None;
        for d in all {
            let t = Tensor::<I, 1>::from_data(d, &device);
            summed = Some(match summed {
                Some(acc) => acc + t,
                None => t,
            });
        }
        let summed = summed.ok_or("no node's gradients")?;
        let total = summed.dims()[0];
        let t: Vec<f32> = summed
            .clone()
            .slice(total - tail.len()..total)
            .into_data()
            .to_vec()
            .map_err(|e| format!("reading the summed step statistics: {e:?}"))?;
        stats.loss = t[0] as f64;
        stats.ce = t[1] as f64;
        stats.bce = t[2] as f64;
        stats.dice = t[3] as f64;
        stats.correct_tokens = t[4] as f64;
        stats.tokens = t[5] as f64;
        stats.intersection = t[6] as f64;
        stats.union = t[7] as f64;
        stats.batch_size = t[8].round() as usize;
        flat.unflatten(model, &summed)
    }

    /// Ends this node's part: a last exchange (every node has reached the end), then waits
    /// until the others have downloaded everything this node exposed, and stops the service.
    pub(crate) fn finish(&self) -> Result<(), String> {
        self.gather(TensorData::new(vec![0f32], [1]))?;
        let service = self.service.clone();
        let start = Instant::now();
        self.runtime.block_on(async move {
            while !service.exposed_tensors.lock().await.is_empty() && start.elapsed() < LINGER {
                service.new_tensor_notify.notify_waiters();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Close this node's connections with a handshake (a reset makes the other
            // node's handler panic).
            service.close().await;
        });
        self.cancel.cancel();
        Ok(())
    }
}

impl<I: Backend> Drop for Cluster<I> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A replica's gradients as one flat f32 tensor whose layout depends on the module only, so
/// that replicas (devices, nodes) whose data reached different parameters still line up: one
/// slot per trained parameter (zeros where this replica has no gradient for it), then one
/// presence entry per trained parameter (1 where it had a gradient). Summed over replicas,
/// a parameter no replica reached stays without a gradient, as when the gradients of
/// several micro-batches are accumulated on one device.
pub(crate) struct FlatGrads<B: AutodiffBackend> {
    /// Slots, then presence entries.
    pub(crate) parts: Vec<Tensor<B::InnerBackend, 1>>,
    /// Shape and dtype of each parameter's gradient, in visiting order; `None` for a
    /// parameter that does not train.
    shapes: Vec<Option<(Vec<usize>, DType)>>,
    /// What is left of the gradient set (gradients of no parameter of `model`).
    rest: GradientsParams,
}

struct Flatten<B: AutodiffBackend> {
    grads: GradientsParams,
    parts: Vec<Tensor<B::InnerBackend, 1>>,
    shapes: Vec<Option<(Vec<usize>, DType)>>,
    present: Vec<f32>,
    device: Option<B::Device>,
    /// A gradient of a parameter that does not train (it would have no slot).
    stray: Option<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let grad = self.grads.remove::<B::InnerBackend, D>(param.id);
        let value = param.val();
        // Slots follow the module alone (which parameters train), never the data.
        if !value.is_require_grad() {
            if grad.is_some() {
                self.stray.get_or_insert(param.id);
            }
            self.shapes.push(None);
            return;
        }
        let dims = value.dims().to_vec();
        let n: usize = dims.iter().product();
        let device = value.device();
        self.shapes.push(Some((dims, value.dtype())));
        match grad {
            Some(g) => {
                self.parts.push(g.cast(DType::F32).reshape([n]));
                self.present.push(1.0);
            }
            None => {
                self.parts
                    .push(Tensor::<B::InnerBackend, 1>::zeros([n], &device).cast(DType::F32));
                self.present.push(0.0);
            }
        }
        self.device.get_or_insert(device);
    }
}

/// Flattens `grads`, the gradients of `model`'s parameters (see [`FlatGrads`]); a gradient
/// of a parameter that does not train is an error.
pub(crate) fn flatten_grads<B, M>(model: &M, grads: GradientsParams) -> Result<FlatGrads<B>, String>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut f = Flatten::<B> {
        grads,
        parts: Vec::new(),
        shapes: Vec::new(),
        present: Vec::new(),
        device: None,
        stray: None,
    };
    model.visit(&mut f);
    if let Some(id) = f.stray {
        return Err(format!(
            "parameter {id} has a gradient but does not train: the replicas' layouts would differ"
        ));
    }
    let device = f.device.unwrap_or_default();
    let n = f.present.len();
    f.parts.push(
        Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(f.present, [n]), &device)
            .cast(DType::F32),
    );
    Ok(FlatGrads {
        parts: f.parts,
        shapes: f.shapes,
        rest: f.grads,
    })
}

impl<B: AutodiffBackend> FlatGrads<B> {
    /// Elements of the slots and presence entries (what [`FlatGrads::parts`] holds).
    pub(crate) fn len(&self) -> usize {
        let slots: usize = self
            .shapes
            .iter()
            .flatten()
            .map(|(d, _)| d.iter().product::<usize>())
            .sum();
        slots + self.shapes.iter().flatten().count()
    }

    /// The gradient set back from `summed` (starting with the summed slots and presence
    /// entries; anything after them is ignored): every parameter some replica had a gradient
    /// for, in its shape and dtype.
    pub(crate) fn unflatten<M: AutodiffModule<B>>(
        self,
        model: &M,
        summed: &Tensor<B::InnerBackend, 1>,
    ) -> Result<GradientsParams, String> {
        let trained = self.shapes.iter().flatten().count();
        let slots = self.len() - trained;
        let present: Vec<f32> = summed
            .clone()
            .slice(slots..slots + trained)
            .into_data()
            .to_vec()
            .map_err(|e| format!("reading which gradients are present: {e:?}"))?;
        let FlatGrads {
            shapes, mut rest, ..
        } = self;
        let mut u = Unflatten::<B> {
            grads: &mut rest,
            summed,
            shapes: &shapes,
            present: &present,
            next: 0,
            trained: 0,
            at: 0,
        };
        model.visit(&mut u);
        Ok(rest)
    }
}

/// Puts the summed gradients back, each in its shape and dtype.
struct Unflatten<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    summed: &'a Tensor<B::InnerBackend, 1>,
    shapes: &'a [Option<(Vec<usize>, DType)>],
    present: &'a [f32],
    /// Index into `shapes`.
    next: usize,
    /// Index into `present`.
    trained: usize,
    /// Offset into `summed`.
    at: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let entry = self.shapes.get(self.next).cloned().flatten();
        self.next += 1;
        if let Some((dims, dtype)) = entry {
            let n: usize = dims.iter().product();
            let start = self.at;
            self.at += n;
            let reached = self.present.get(self.trained).is_some_and(|&p| p > 0.0);
            self.trained += 1;
            if reached {
                let mut shape = [0usize; D];
                shape.copy_from_slice(&dims);
                let g = self
                    .summed
                    .clone()
                    .slice(start..start + n)
                    .reshape(shape)
                    .cast(dtype);
                self.grads.register(param.id, g);
            }
        }
    }
}
