//! WASM functions: user modules (the `skygate-fn` ABI, see `sdk/`) run as workflow steps
//! on wasmtime, each call fenced in.
//!
//! Containment, per call (one batch):
//! - time: an epoch deadline (`timeout`); a ticker thread advances the engine's epoch
//!   every [`EPOCH_TICK`], so a loop is stopped within `timeout` plus one tick;
//! - memory: a store limit (`max_memory`); growth beyond it fails inside the module;
//! - output: at most `max_output_bytes` and `max_output_records`, checked before decoding;
//! - capabilities: none. WASI imports are stubs: stdout/stderr are kept (bounded) to
//!   explain a failure, clocks and random numbers work, everything else is `ENOSYS`.
//!
//! A failed call costs nothing accepted: the batch's records go to the step's dead-letter
//! stream, marked bad with the reason, and the module's instance is dropped; the next
//! batch gets a fresh one (its state starts over). Everything else goes on.
//!
//! Compiled modules are cached in `<data-dir>/wasm-cache/<engine>/<sha256>.cwasm`:
//! a restart deserializes instead of compiling. The file name is the module's SHA-256,
//! the directory the engine's compatibility hash, so a new agent version never loads code
//! compiled by another.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use skygate_drivers::{Quality, Timestamp, Value};
use skygate_fn as abi;
use wasmtime::{
    Caller, Config, Engine, Extern, Instance, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc, Val,
};

use super::builtins::{Item, Span, Step, StepErrors};
use super::spec::{Selector, WasmLimits};

/// How often the engine's epoch advances: the granularity of time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Bytes of a module's stdout/stderr kept to explain a failure.
const LOG_KEEP: usize = 2048;
/// WASI errno `ENOSYS`.
const ENOSYS: i32 = 52;

/// The shared wasmtime engine, its epoch ticker and the compiled-module cache.
#[derive(Debug)]
pub struct WasmRuntime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    pub cache_hits: AtomicU64,
    pub compiles: AtomicU64,
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn config() -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    // 32-bit hosts cannot reserve 4 GiB of address space per memory.
    #[cfg(target_pointer_width = "32")]
    {
        c.memory_reservation(64 << 20);
        c.memory_guard_size(64 << 10);
    }
    c
}

/// Checks a module file's bytes without compiling: valid WebAssembly that exports what the
/// ABI needs. Returns its SHA-256 (hex).
pub fn check_module(bytes: &[u8]) -> Result<String, String> {
    use sha2::Digest;
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly module (no \\0asm header)".into());
    }
    // One engine for every check: a config load checks each module, reloads included.
    static VALIDATOR: std::sync::OnceLock<Result<Engine, String>> = std::sync::OnceLock::new();
    let engine = VALIDATOR
        .get_or_init(|| Engine::new(&config()).map_err(|e| format!("wasm engine: {e}")))
        .as_ref()
        .map_err(Clone::clone)?;
    Module::validate(engine, bytes).map_err(|e| format!("invalid WebAssembly: {e}"))?;
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::ExportSection(s)) => {
                exports.extend(s.into_iter().flatten().map(|e| e.name.to_string()));
            }
            Ok(wasmparser::Payload::ImportSection(s)) => {
                for i in s.into_imports().flatten() {
                    if i.module != "wasi_snapshot_preview1" {
                        return Err(format!(
                            "imports {}::{}; a function may import only WASI (wasi_snapshot_preview1)",
                            i.module, i.name
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    for need in ["memory", "skygate_alloc", "skygate_process"] {
        if !exports.iter().any(|e| e == need) {
            return Err(format!(
                "does not export `{need}` (see the skygate-fn ABI; exports: {})",
                exports.join(", ")
            ));
        }
    }
    Ok(hex(&sha2::Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A compiled module, and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub module: Module,
    pub sha256: String,
    pub from_cache: bool,
}

impl WasmRuntime {
    /// The engine and its epoch ticker; `cache_dir` keeps compiled modules across starts.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Arc<Self>, String> {
        let engine = Engine::new(&config()).map_err(|e| format!("wasm engine: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("skygate-wasm-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    #[allow(clippy::disallowed_methods, reason = "the WASM epoch ticker thread")]
                    std::thread::sleep(EPOCH_TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| format!("wasm epoch thread: {e}"))?;
        let cache_dir = cache_dir.map(|d| {
            let mut h = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            d.join(format!("{:016x}", h.finish()))
        });
        Ok(Arc::new(Self {
            engine,
            cache_dir,
            stop,
            cache_hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        }))
    }

    /// Compiles `bytes`, or loads the compiled code cached for them.
    pub fn load(&self, bytes: &[u8]) -> Result<Loaded, String> {
        use sha2::Digest;
        let sha256 = hex(&sha2::Sha256::digest(bytes));
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}.cwasm")));
        // Read, not mapped (`deserialize_file` maps the file): a cache file changed in place
        // under a mapping would crash the agent with SIGBUS.
        if let Some(path) = &cached
            && let Ok(code) = std::fs::read(path)
        {
            // SAFETY: the file was written by `precompile_module` of an engine with the same
            // compatibility hash (its directory) for exactly these bytes (its name), inside
            // the agent's own data directory. wasmtime still checks its header and version.
            #[allow(unsafe_code)]
            let loaded = unsafe { Module::deserialize(&self.engine, &code) };
            match loaded {
                Ok(module) => {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Loaded {
                        module,
                        sha256,
                        from_cache: true,
                    });
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cached wasm module unusable; compiling again");
                }
            }
        }
        let compiled = self
            .engine
            .precompile_module(bytes)
            .map_err(|e| format!("cannot compile: {e}"))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &cached
            && let Err(e) = write_cache(path, &compiled)
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot cache compiled wasm module");
        }
        // SAFETY: `compiled` was produced just now by this engine's `precompile_module`.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize(&self.engine, &compiled) }
            .map_err(|e| format!("cannot load compiled module: {e}"))?;
        Ok(Loaded {
            module,
            sha256,
            from_cache: false,
        })
    }
}

fn write_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("cwasm.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

struct Host {
    limits: StoreLimits,
    log: Vec<u8>,
}

/// One live instance of a module.
struct Sandbox {
    store: Store<Host>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32), i64>,
}

fn wasi_stubs(linker: &mut Linker<Host>, module: &Module) -> Result<(), String> {
    for imp in module.imports() {
        let (m, name) = (imp.module(), imp.name());
        if m != "wasi_snapshot_preview1" {
            return Err(format!(
                "imports {m}::{name}, which Skygate does not provide"
            ));
        }
        let Some(ty) = imp.ty().func().cloned() else {
            return Err(format!("imports {m}::{name}, which is not a function"));
        };
        let name_owned = name.to_string();
        linker
            .func_new(
                m,
                name,
                ty,
                move |mut caller: Caller<'_, Host>, args, results| {
                    let errno = wasi_call(&mut caller, &name_owned, args)?;
                    if let Some(r) = results.first_mut() {
                        *r = Val::I32(errno);
                    }
                    Ok(())
                },
            )
            .map_err(|e| format!("linking {m}::{name}: {e}"))?;
    }
    Ok(())
}

fn arg(args: &[Val], i: usize) -> u32 {
    args.get(i).and_then(Val::i32).unwrap_or(0) as u32
}

/// The few WASI calls a function's standard library makes, without capabilities.
fn wasi_call(caller: &mut Caller<'_, Host>, name: &str, args: &[Val]) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
        return Ok(ENOSYS);
    };
    let u32_at = |data: &[u8], at: u32| -> Option<u32> {
        let at = at as usize;
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match name {
        "fd_write" => {
            let (fd, iovs, n, nwritten) = (arg(args, 0), arg(args, 1), arg(args, 2), arg(args, 3));
            let (data, host) = mem.data_and_store_mut(&mut *caller);
            let mut total = 0u32;
            for i in 0..n {
                let (Some(p), Some(l)) =
                    (u32_at(data, iovs + i * 8), u32_at(data, iovs + i * 8 + 4))
                else {
                    return Ok(21); // EFAULT
                };
                if let Some(bytes) = data.get(p as usize..(p as usize).saturating_add(l as usize))
                    && (fd == 1 || fd == 2)
                    && host.log.len() < LOG_KEEP
                {
                    let room = LOG_KEEP - host.log.len();
                    host.log.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                total = total.saturating_add(l);
            }
            match data.get_mut(nwritten as usize..nwritten as usize + 4) {
                Some(w) => w.copy_from_slice(&total.to_le_bytes()),
                None => return Ok(21),
            }
            Ok(0)
        }
        "random_get" => {
            let (p, l) = (arg(args, 0) as usize, arg(args, 1) as usize);
            match mem.data_mut(&mut *caller).get_mut(p..p.saturating_add(l)) {
                Some(buf) => {
                    rand::fill(buf);
                    Ok(0)
                }
                None => Ok(21),
            }
        }
        "clock_time_get" => {
            let out = arg(args, 2) as usize;
            let now = Timestamp::now().as_nanos() as u64;
            match mem.data_mut(&mut *caller).get_mut(out..out + 8) {
                Some(b) => {
                    b.copy_from_slice(&now.to_le_bytes());
                    Ok(0)
                }
                None => Ok(21),
            }
        }
        "environ_sizes_get" | "args_sizes_get" => {
            let (a, b) = (arg(args, 0) as usize, arg(args, 1) as usize);
            let data = mem.data_mut(&mut *caller);
            for at in [a, b] {
                match data.get_mut(at..at + 4) {
                    Some(w) => w.copy_from_slice(&0u32.to_le_bytes()),
                    None => return Ok(21),
                }
            }
            Ok(0)
        }
        "environ_get" | "args_get" | "sched_yield" => Ok(0),
        "proc_exit" => Err(wasmtime::Error::msg(format!(
            "called proc_exit({})",
            arg(args, 0)
        ))),
        _ => Ok(ENOSYS),
    }
}

impl Sandbox {
    fn new(rt: &WasmRuntime, module: &Module, limits: &WasmLimits) -> Result<Self, String> {
        let mut linker = Linker::new(&rt.engine);
        wasi_stubs(&mut linker, module)?;
        let host = Host {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.max_memory as usize)
                .instances(1)
                .tables(4)
                .memories(1)
                .trap_on_grow_failure(false)
                .build(),
            log: Vec::new(),
        };
        let mut store = Store::new(&rt.engine, host);
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        let instance: Instance = linker
            .instantiate(&mut store, module)
            .map_err(|e| failure(&store, &e, limits))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("does not export its memory")?;
        let alloc = instance
            .get_typed_func(&mut store, "skygate_alloc")
            .map_err(|e| format!("skygate_alloc: {e}"))?;
        let process = instance
            .get_typed_func(&mut store, "skygate_process")
            .map_err(|e| format!("skygate_process: {e}"))?;
        Ok(Self {
            store,
            memory,
            alloc,
            process,
        })
    }

    /// One call: the batch in, the output batch's bytes out.
    fn call(
        &mut self,
        input: &[u8],
        limits: &WasmLimits,
        max_records: u64,
    ) -> Result<Vec<u8>, String> {
        self.store.data_mut().log.clear();
        self.store
            .set_epoch_deadline(deadline_ticks(limits.timeout));
        let len = i32::try_from(input.len()).map_err(|_| "batch too large".to_string())?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| failure(&self.store, &e, limits))?;
        self.memory
            .write(&mut self.store, ptr as u32 as usize, input)
            .map_err(|_| format!("skygate_alloc({len}) returned {ptr}, outside its memory"))?;
        let packed = self
            .process
            .call(&mut self.store, (ptr, len))
            .map_err(|e| failure(&self.store, &e, limits))?;
        let (at, n) = (
            (packed as u64 >> 32) as usize,
            (packed as u64 & 0xffff_ffff) as usize,
        );
        if n as u64 > limits.max_output_bytes {
            return Err(format!(
                "output of {n} bytes is over the limit of {} bytes",
                limits.max_output_bytes
            ));
        }
        let data = self.memory.data(&self.store);
        let out = data.get(at..at.saturating_add(n)).ok_or_else(|| {
            format!(
                "output at {at}+{n} lies outside its memory ({} bytes)",
                data.len()
            )
        })?;
        if out.len() >= abi::BATCH_HEADER {
            let count = u32::from_le_bytes([out[4], out[5], out[6], out[7]]) as u64;
            if count > max_records {
                return Err(format!(
                    "output of {count} records is over the limit of {max_records} for this batch"
                ));
            }
        }
        Ok(out.to_vec())
    }
}

fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
}

/// Why a call failed, in words an operator can act on.
fn failure(store: &Store<Host>, e: &wasmtime::Error, limits: &WasmLimits) -> String {
    let log = String::from_utf8_lossy(&store.data().log)
        .trim()
        .to_string();
    let what = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!("ran past its time limit of {:?}", limits.timeout),
        Some(Trap::UnreachableCodeReached) if log.contains("memory allocation") => {
            format!("ran out of memory (limit {} MiB)", limits.max_memory >> 20)
        }
        Some(t) => format!("trapped: {t}"),
        None => format!("failed: {e}"),
    };
    if log.is_empty() {
        what
    } else {
        format!("{what}; it wrote: {log}")
    }
}

/// A workflow step running a WASM function.
pub struct WasmStep {
    rt: Arc<WasmRuntime>,
    loaded: Loaded,
    label: Arc<str>,
    channels: Selector,
    limits: WasmLimits,
    dead_stream: Arc<str>,
    sandbox: Option<Sandbox>,
    input: Vec<u8>,
    /// Calls that failed (the batch dead-lettered) and fresh instances started.
    pub failures: u64,
}

impl std::fmt::Debug for WasmStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmStep")
            .field("module", &self.label)
            .field("sha256", &self.loaded.sha256)
            .field("failures", &self.failures)
            .finish()
    }
}

impl WasmStep {
    pub fn new(
        rt: Arc<WasmRuntime>,
        loaded: Loaded,
        label: &str,
        channels: Selector,
        limits: WasmLimits,
        dead_stream: &str,
    ) -> Self {
        Self {
            rt,
            loaded,
            label: Arc::from(label),
            channels,
            limits,
            dead_stream: Arc::from(dead_stream),
            sandbox: None,
            input: Vec::new(),
            failures: 0,
        }
    }

    /// Runs one encoded batch of `n` records; the output batch's bytes, or why not.
    fn call(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let sandbox = match &mut self.sandbox {
            Some(s) => s,
            None => self
                .sandbox
                .insert(Sandbox::new(&self.rt, &self.loaded.module, &self.limits)?),
        };
        let max = n as u64 * self.limits.max_output_per_input as u64 + 1024;
        let r = sandbox.call(&self.input, &self.limits, max);
        if r.is_err() {
            // Whatever it holds may be half-updated: start over with the next batch.
            self.sandbox = None;
            self.failures += 1;
        }
        r
    }
}

fn wire_value(v: &Value) -> Option<(f64, abi::Kind)> {
    match v {
        Value::Number(x) => Some((*x, abi::Kind::Number)),
        Value::Integer(x) => Some((*x as f64, abi::Kind::Integer)),
        Value::Bool(b) => Some((if *b { 1.0 } else { 0.0 }, abi::Kind::Bool)),
        _ => None,
    }
}

fn wire_quality(q: &Quality) -> abi::Quality {
    match q {
        Quality::Good => abi::Quality::Good,
        Quality::Uncertain(_) => abi::Quality::Uncertain,
        Quality::Bad(_) => abi::Quality::Bad,
    }
}

/// Checks a function's output batch whole before anything is built from it: on an error
/// the inputs are still intact for the dead letters.
fn check_output(bytes: &[u8], n: usize) -> Result<(), String> {
    abi::read_batch(bytes, |r| {
        if r.first > r.last || r.last as usize >= n {
            return Err(abi::AbiError(format!(
                "an output names inputs {}..={} of a batch of {n}",
                r.first, r.last
            )));
        }
        if !r.channel.is_empty() {
            skygate_util::names::validate_name(r.channel)
                .map_err(|e| abi::AbiError(format!("an output's channel: {e}")))?;
        }
        Ok(())
    })
    .map(|_| ())
    .map_err(|e| format!("output batch: {e}"))
}

/// Builds items from a checked output batch: each input record is moved into its first
/// output and cloned only for further ones.
fn decode(bytes: &[u8], given: Vec<Item>, label: &str) -> Vec<Item> {
    let spans: Vec<Span> = given.iter().map(|i| i.from).collect();
    let mut given: Vec<Option<Item>> = given.into_iter().map(Some).collect();
    // An input's own channel, kept when a later output of it changed the record's.
    let mut channels: Vec<Option<Arc<str>>> = vec![None; given.len()];
    let mut moved_to: Vec<usize> = vec![usize::MAX; given.len()];
    let mut out: Vec<Item> = Vec::with_capacity(given.len());
    // Checked by `check_output`: every index is in range, every name valid.
    let _ = abi::read_batch(bytes, |r| {
        let f = r.first as usize;
        let mut rec = match given[f].take() {
            Some(it) => it.rec,
            None => {
                let mut again = out[moved_to[f]].rec.clone();
                if let Some(c) = &channels[f] {
                    again.reading.channel = c.clone();
                }
                again
            }
        };
        moved_to[f] = out.len();
        let rd = &mut rec.reading;
        if !r.channel.is_empty() && *rd.channel != *r.channel {
            let own = std::mem::replace(&mut rd.channel, Arc::from(r.channel));
            channels[f].get_or_insert(own);
        }
        rd.ts = Timestamp(r.ts_ns);
        rd.value = match r.kind {
            abi::Kind::Number => Value::Number(r.value),
            abi::Kind::Integer => Value::Integer(r.value as i64),
            abi::Kind::Bool => Value::Bool(r.value != 0.0),
        };
        rd.quality = match r.quality {
            abi::Quality::Good => Quality::Good,
            abi::Quality::Uncertain => Quality::Uncertain(format!("set by wasm function {label}")),
            abi::Quality::Bad => Quality::Bad(format!("set by wasm function {label}")),
        };
        let (a, b) = (spans[f], spans[r.last as usize]);
        let count = spans[f..=r.last as usize].iter().map(|s| s.count).sum();
        out.push(Item {
            rec,
            from: Span {
                first: a.first.min(b.first),
                last: a.last.max(b.last),
                count,
            },
        });
        Ok(())
    });
    out
}

impl Step for WasmStep {
    fn run(&mut self, input: &mut Vec<Item>, out: &mut Vec<Item>, errors: &mut StepErrors) {
        let mut given = Vec::with_capacity(input.len());
        self.input.clear();
        abi::begin_batch(&mut self.input, 0);
        for it in input.drain(..) {
            let r = &it.rec.reading;
            match wire_value(&r.value) {
                Some((value, kind)) if self.channels.matches(&r.channel) => {
                    let i = given.len() as u32;
                    abi::put_record(
                        &mut self.input,
                        &abi::WireRecord {
                            ts_ns: r.ts.as_nanos(),
                            value,
                            first: i,
                            last: i,
                            kind,
                            quality: wire_quality(&r.quality),
                            channel: &r.channel,
                        },
                    );
                    given.push(it);
                }
                // Not for the function: passes the step unchanged.
                _ => out.push(it),
            }
        }
        if given.is_empty() {
            return;
        }
        self.input[4..8].copy_from_slice(&(given.len() as u32).to_le_bytes());
        let result = self
            .call(given.len())
            .and_then(|bytes| check_output(&bytes, given.len()).map(|()| bytes));
        match result {
            Ok(bytes) => out.extend(decode(&bytes, given, &self.label)),
            Err(reason) => {
                let reason = format!("wasm function {} {reason}", self.label);
                tracing::warn!(error = %reason, records = given.len(), "batch dead-lettered");
                for it in given {
                    errors.dead_letter(it, &self.dead_stream, &reason);
                }
                errors.add(|| reason);
            }
        }
    }
}

#[cfg(test)]
mod tests;
