#!/usr/bin/env python3
"""Groups the samples of `perf script` (taken with `--call-graph dwarf`) of a
Gatehouse process by the stage of a call they belong to, and by the kind of
work at the leaf. Used for bench/PROFILE.md.

    perf script -i perf.data --no-inline -F comm,tid,time,ip,sym,dso,period \
        | python3 bench/perf_stages.py [--calls N] [--callers REGEX ...]

A sample's stage is decided by the innermost frame (nearest the leaf) that
names one of the stages below, so a `malloc` or a `writev` counts for the
stage that called it; samples of the SQLite connection threads and of the
audit-file thread are their own stages. Samples whose stack names no stage
(often stacks cut short by the 16 KB dwarf copy) are "unattributed".
With --calls the stage's share is also given in microseconds of CPU per call
(one sample = one period of the sampling clock). --callers REGEX prints,
for samples whose leaf matches REGEX, the stages and nearest named frames
they come from.
"""
import argparse
import collections
import re
import sys

# Worker-thread stages: (name, regex on a frame's symbol). Checked for each
# frame from the leaf outwards; the first frame that matches any decides,
# and among the patterns the first listed wins.
STAGES = [
    ("gate 1: authentication (gatehouse-authn, gate1.rs, http/authenticate.rs)",
     r"gatehouse_authn::|gatehouse_mcp::gate1|gatehouse_mcp::http::authenticate"),
    ("admission (http/admission.rs)", r"gatehouse_mcp::http::admission"),
    ("gate 2: policy (gatehouse-policy, gatehouse-authz)", r"gatehouse_policy::|gatehouse_authz::"),
    ("the tool (gatehouse-tools)", r"gatehouse_tools::"),
    ("audit: hash chain (chain.rs, SHA-256)", r"gatehouse_audit::chain|sha256_block_data_order|aws_lc_\d+_\d+_\d+_SHA256"),
    ("audit: records, writer task, JSON lines (gatehouse-audit)", r"gatehouse_audit::"),
    ("SQLite: sqlx's async side (statements, pool, channel to the connection thread)", r"sqlx_core::|sqlx_sqlite::|flume::"),
    ("upstream call: the client (gatehouse-upstream, reqwest, hyper's client)",
     r"gatehouse_upstream::|reqwest::|hyper_util::client::|hyper::client::"),
    ("rmcp: per-request machinery (transport, service, (de)serialization)", r"rmcp::"),
    ("Gatehouse MCP handler and gateway (sdk/mod.rs, gateway.rs)", r"gatehouse_mcp::(?!http::)"),
    ("tracing spans and metrics", r"tracing_subscriber::|tracing_core::|tracing::span::|gatehouse_metrics::|opentelemetry"),
    ("HTTP: hyper, axum, tower, middleware (guard, request id, body)", r"hyper::|hyper_util::|axum::|axum_core::|tower::|tower_http::|http::|h2::|httparse|gatehouse_mcp::http::"),
]
STAGES = [(name, re.compile(rx)) for name, rx in STAGES]
# When no frame names a stage: the runtime's own work (its scheduler, the
# I/O driver, timers), or a stack cut short.
TOKIO = ("Tokio runtime (scheduler, I/O driver, timers; task spawns are charged to the spawner)",
         re.compile(r"tokio::"))

# The SQLite connection threads' work, by the innermost frame naming one.
SQLITE_WORK = [
    ("checkpoint (walCheckpoint: copy the WAL into the database, fsync)",
     r"walCheckpoint|sqlite3WalCheckpoint|sqlite3PagerCheckpoint|sqlite3Checkpoint|sqlite3_wal_checkpoint"),
    ("statement prepare (parse the SQL)",
     r"sqlite3Prepare|sqlite3LockAndPrepare|sqlite3RunParser|sqlite3Parser|yy_reduce|sqlite3_prepare"),
    ("page cache reset at transaction start (another connection wrote)",
     r"pager_reset|pcache1TruncateUnsafe|sqlite3PcacheClear|pcache1Truncate|sqlite3PagerClearCache"),
    ("page reads (WAL index lookup, pread)",
     r"readDbPage|sqlite3WalReadFrame|walFindFrame|getPageNormal|sqlite3WalFindFrame"),
    ("commit: WAL frames appended (pwrite, checksums)",
     r"sqlite3WalFrames|walWriteToLog|walWriteOneFrame|pagerWalFrames|walChecksumBytes|walIndexAppend"),
    ("locks (fcntl, shm locks)", r"unixLock|unixUnlock|posix_lock|fcntl|unixShmLock|walLockShared|walLockExclusive|walTryBeginRead|walIndexReadHdr"),
    ("bind, reset, clear bindings", r"bind|sqlite3_reset|sqlite3_clear_bindings|sqlite3VdbeReset|sqlite3VdbeHalt|sqlite3VdbeDelete|sqlite3_finalize"),
    ("execute the INSERT (VDBE, B-tree)", r"sqlite3VdbeExec|sqlite3BtreeInsert|balance|insertCell|sqlite3_step"),
    ("sqlx's connection worker and channel (waiting, waking)", r"flume|park|sqlx_sqlite::connection::worker|sqlx_sqlite::|sqlx_core::"),
]
SQLITE_WORK = [(name, re.compile(rx)) for name, rx in SQLITE_WORK]

# Leaf kinds.
KINDS = [
    ("kernel: scheduler, context switches (finish_task_switch, schedule)", r"finish_task_switch|__schedule|schedule\b|pick_next|update_curr|dequeue_task|enqueue_task|ttwu|try_to_wake_up|_raw_spin_unlock_irqrestore|_raw_spin_unlock_irq\b"),
    ("kernel: futex", r"futex"),
    ("kernel: networking (TCP, sockets, loopback)", r"tcp_|sock_|skb|__sk_|sk_|ip_|inet_|net_|__netif|loopback|__dev_queue|napi|csum|__tcp|release_sock|lock_sock"),
    ("kernel: files (ext4, page cache, read/write, locks)", r"ext4|filemap|folio|generic_perform_write|copy_to_iter|_copy_to_iter|copy_from_iter|iomap|jbd2|posix_lock|fcntl|vfs_|xas_|pagecache|__fsnotify|file_"),
    ("kernel: epoll", r"epoll|ep_"),
    ("kernel: other", r"^__x64_sys|^do_syscall|^entry_SYSCALL|^syscall_exit|^exit_to_user|kallsyms"),
    ("memcpy/memmove/memset (libc)", r"memmove|memcpy|memset|memcmp"),
    ("allocation: mimalloc (Gatehouse's Rust allocator)", r"^_?mi_|mi_theap|mi_heap|mi_page|mi_free|mi_malloc"),
    ("allocation: glibc malloc (in Gatehouse: SQLite's)", r"^_int_malloc|^_int_free|^malloc|^free$|^cfree|malloc_consolidate|unlink_chunk|^__libc_malloc|^__libc_free|^realloc|_int_realloc|sqlite3MemSize|sqlite3DbMalloc|sqlite3Malloc|sqlite3_free|sqlite3DbFree"),
    ("SQLite engine (sqlite3*)", r"^sqlite3|^wal|^pcache|^pager|^btree|^vdbe|^balance|^insertCell|^moveTo|^getAndInitPage|^unixWrite|^unixRead|^seekAndWrite|^seekAndRead"),
    ("serde / serde_json", r"serde"),
]
KINDS = [(name, re.compile(rx)) for name, rx in KINDS]


def parse(stream):
    cur = None
    for line in stream:
        line = line.rstrip("\n")
        if not line:
            if cur:
                yield cur
            cur = None
            continue
        if not line[0].isspace():
            m = re.match(r"(.+?)\s+(\d+)\s+([\d.]+):\s+(\d+)", line)
            if m:
                cur = (m.group(1).strip(), int(m.group(4)), [])
            continue
        if cur is not None:
            parts = line.strip().split(" ", 1)
            sym = parts[1] if len(parts) > 1 else ""
            dso = ""
            m = re.search(r"\(([^()]*)\)$", sym)
            if m:
                dso = m.group(1)
                sym = sym[: m.start()].rstrip()
            cur[2].append((sym, dso))
    if cur:
        yield cur


def stage_of(comm, frames):
    if comm.startswith("sqlx-sqlite"):
        return "SQLite connection threads (sqlite3: inserts, checkpoints; pread/pwrite)"
    if comm.startswith("gatehouse-audit"):
        return "audit-file thread (audit.jsonl appends)"
    for sym, _ in frames:
        for name, rx in STAGES:
            if rx.search(sym):
                return name
    if any(TOKIO[1].search(sym) for sym, _ in frames):
        return TOKIO[0]
    return "unattributed (stack names no stage)"


def sqlite_work_of(frames):
    for sym, _ in frames:
        for name, rx in SQLITE_WORK:
            if rx.search(sym):
                return name
    return "other"


def kind_of(frames):
    if not frames:
        return "unknown"
    sym, dso = frames[0]
    for name, rx in KINDS:
        if rx.search(sym):
            if name.startswith("kernel") and "kernel" not in dso:
                continue
            return name
    if "kernel" in dso:
        return "kernel: other"
    if "libc" in dso:
        return "libc: other"
    return "user code (Rust: Gatehouse, its crates, std)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=0, help="calls answered while perf recorded")
    ap.add_argument("--callers", action="append", default=[], help="leaf regex to explain")
    args = ap.parse_args()
    samples = list(parse(sys.stdin))
    total = sum(p for _, p, _ in samples)
    if not total:
        sys.exit("no samples")
    by_comm = collections.Counter()
    by_stage = collections.Counter()
    by_kind = collections.Counter()
    by_stage_kind = collections.defaultdict(collections.Counter)
    by_sqlite_work = collections.Counter()
    by_syscall = collections.Counter()
    for comm, period, frames in samples:
        if frames and "kernel" in frames[0][1]:
            # Named by the user-space frame that entered the kernel (the
            # kernel's own stacks often lack the __x64_sys_* frame): libc's
            # wrapper, or for the generic `syscall` wrapper (futex) its caller.
            user = [sym for sym, dso in frames if "kernel" not in dso]
            if not user:
                call = "no user frame (interrupt, kernel thread)"
            else:
                call = re.sub(r"^(__GI___|__libc_|__GI_|__)", "", user[0])
                if call == "syscall" and len(user) > 1:
                    call = "futex via " + user[1][:70]
            if any(re.search(r"^schedule$|__schedule", sym) for sym, _ in frames):
                call += " -> switched out"
            by_syscall[f"{call} [{'worker' if comm.startswith('tokio') else comm}]"] += period
        st = stage_of(comm, frames)
        if comm.startswith("sqlx-sqlite"):
            by_sqlite_work[sqlite_work_of(frames)] += period
        kd = kind_of(frames)
        by_comm[comm] += period
        by_stage[st] += period
        by_kind[kd] += period
        by_stage_kind[st][kd] += period

    def show(title, counter):
        print(f"\n{title}")
        for name, p in counter.most_common():
            us = f"  {p / 1e3 / args.calls:7.1f} us/call" if args.calls else ""
            print(f"  {100 * p / total:5.1f} %{us}  {name}")

    print(f"{len(samples)} samples, {total / 1e9:.2f} s of CPU sampled"
          + (f", {args.calls} calls: {total / 1e3 / args.calls:.1f} us of CPU per call" if args.calls else ""))
    show("By thread:", by_comm)
    show("By stage (innermost frame naming a stage; includes the allocation and system calls it causes):", by_stage)
    show("By kind of work at the leaf:", by_kind)
    show("The SQLite connection threads' work (share of all samples):", by_sqlite_work)
    show("Kernel samples by system call [thread] (the leaf kind above is skewed: with a"
         " software clock, samples taken with interrupts off land where they are turned on"
         " again):", by_syscall)
    print("\nLeaf kinds within each stage (share of all samples):")
    for st, _ in by_stage.most_common():
        parts = ", ".join(f"{k.split(' (')[0]} {100 * p / total:.1f}" for k, p in by_stage_kind[st].most_common(5))
        print(f"  {st}: {parts}")
    for rx in args.callers:
        crx = re.compile(rx)
        callers = collections.Counter()
        n = 0
        for comm, period, frames in samples:
            if frames and crx.search(frames[0][0]):
                n += period
                named = next((s for s, _ in frames[1:] if "kernel" not in _ and not re.search(r"memmove|memcpy|syscall|^_?mi_|\[unknown\]", s)), "?")
                callers[(stage_of(comm, frames), named[:110])] += period
        print(f"\nSamples whose leaf matches /{rx}/: {100 * n / total:.1f} % of all; by stage and nearest caller:")
        for (st, c), p in callers.most_common(15):
            print(f"  {100 * p / total:5.1f} %  [{st.split(' (')[0]}] {c}")


if __name__ == "__main__":
    main()
