"""An independent numpy implementation of proto/README.md's integer formats
(round to nearest even on x * (1/scale), f32 arithmetic, LSB-first packing),
against which the server's answers are checked."""
import numpy as np

FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def parse(text):
    """(bits, symmetric, granularity, group_size) of "int4_asym_g128"."""
    parts = text.split("_")
    bits, symmetric, granularity, group_size = int(parts[0][3:]), True, "channel", 0
    for p in parts[1:]:
        if p in ("sym", "asym"):
            symmetric = p == "sym"
        elif p in ("tensor", "channel"):
            granularity = p
        else:
            granularity, group_size = "group", int(p[1:])
    return bits, symmetric, granularity, group_size


def quantize(w, text):
    """dict(codes, scales, zero_points, values, dequantized, bits_per_weight)
    for a float array w (converted to f32 as the server does)."""
    bits, symmetric, granularity, group_size = parse(text)
    x = np.asarray(w).astype(np.float32)
    shape = x.shape
    row_length = shape[-1] if shape else 1
    rows = x.size // row_length
    if granularity == "tensor":
        groups = x.reshape(1, -1)
    elif granularity == "channel":
        groups = x.reshape(rows, row_length)
    else:
        groups = x.reshape(-1, group_size)
    if symmetric:
        qmax = (1 << (bits - 1)) - 1
        amax = np.abs(groups).max(axis=1)
        scale = (amax / np.float32(qmax)).astype(np.float32)
        scale = np.where(scale < FLT_MIN, FLT_MIN, scale).astype(np.float32)
        inv = (np.float32(1) / scale).astype(np.float32)
        q = np.clip(np.rint(groups * inv[:, None]), -(qmax + 1), qmax).astype(np.int32)
        zp = None
        fields = q & ((1 << bits) - 1)
    else:
        qmax = (1 << bits) - 1
        lo = np.minimum(groups.min(axis=1), np.float32(0))
        hi = np.maximum(groups.max(axis=1), np.float32(0))
        scale = ((hi - lo) / np.float32(qmax)).astype(np.float32)
        scale = np.where(scale < FLT_MIN, FLT_MIN, scale).astype(np.float32)
        inv = (np.float32(1) / scale).astype(np.float32)
        zp = np.clip(np.rint(-lo * inv), 0, qmax).astype(np.int32)
        q = np.clip(np.rint(groups * inv[:, None]) + zp[:, None], 0, qmax).astype(np.int32)
        fields = q
    deq = scale[:, None] * (q - (0 if zp is None else zp[:, None])).astype(np.float32)
    n = x.size
    packed = pack(fields.reshape(-1), bits)
    scales_shape = (1,) if granularity == "tensor" else (rows, scale.size // rows)
    bits_total = packed.size * 8 + scale.size * 32 + (0 if symmetric else scale.size * 8)
    return {
        "codes": packed,
        "scales": scale.reshape(scales_shape),
        "zero_points": None if zp is None else zp.astype(np.uint8).reshape(scales_shape),
        "values": q.reshape(shape),
        "dequantized": deq.astype(np.float32).reshape(shape),
        "bits_per_weight": bits_total / n,
    }


def pack(fields, bits):
    """Element i in bits [i*bits, (i+1)*bits) of a little-endian bit stream,
    one bit at a time."""
    fields = np.asarray(fields, dtype=np.int64)
    stream = ((fields[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little")


def metrics(w, w_hat):
    """(mse, max_abs_err, sqnr_db, cosine) in float64."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    w_hat = np.asarray(w_hat, dtype=np.float64).reshape(-1)
    err = w - w_hat
    mse = float(np.mean(err ** 2))
    norm_err = np.linalg.norm(err)
    sqnr = float("inf") if norm_err == 0 else 20 * np.log10(np.linalg.norm(w) / norm_err)
    cosine = float(w @ w_hat / (np.linalg.norm(w) * np.linalg.norm(w_hat)))
    return mse, float(np.abs(err).max()), sqnr, cosine
