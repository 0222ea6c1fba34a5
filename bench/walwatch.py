#!/usr/bin/env python3
# Samples a SQLite WAL database's wal-index header (the -shm file) every
# INTERVAL seconds: mxFrame (valid frames in the WAL), nBackfill (frames
# already checkpointed into the database), the read marks, the salt (it
# changes when the WAL restarts from its beginning) and the files' sizes.
# Read-only; never takes a lock. Used for bench/PROFILE.md:
#
#   python3 bench/walwatch.py DATA_DIR/gatehouse.db 0.2 wal.log &
#
# The header is in native byte order (little-endian here); its layout is
# SQLite's WalIndexHdr and WalCkptInfo (mxFrame at byte 16, salt at 32,
# nBackfill at 96, aReadMark at 100, nBackfillAttempted at 128).
import os, struct, sys, time
db, interval, out = sys.argv[1], float(sys.argv[2]), open(sys.argv[3], "w")
t0 = time.time()
while True:
    try:
        with open(db + "-shm", "rb") as f:
            h = f.read(136)
        mx, = struct.unpack_from("<I", h, 16)
        salt = struct.unpack_from("<II", h, 32)
        backfill, = struct.unpack_from("<I", h, 96)
        marks = struct.unpack_from("<5I", h, 100)
        attempted, = struct.unpack_from("<I", h, 128)
        wal = os.path.getsize(db + "-wal")
        size = os.path.getsize(db)
        out.write(f"{time.time() - t0:.2f} mxFrame={mx} nBackfill={backfill} attempted={attempted} "
                  f"readmarks={','.join(map(str, marks))} salt={salt[0]:08x} wal_mb={wal/1e6:.1f} db_mb={size/1e6:.1f}\n")
        out.flush()
    except (OSError, struct.error):
        pass
    time.sleep(interval)
