"""Decoder of Debian's bible-kjv-text data file (/usr/lib/bible.data), following
src/eval/bible_data.cpp: "EC02", an 80-byte description, window size and count (4-byte
big-endian), count + 1 window offsets, a compress(1) header (1F 9D, flags), then one LZW
stream per window as compress(1) writes it (9..maxbits bits, CLEAR = 256 in block mode)."""
import struct

KJV_PATH = "/usr/lib/bible.data"


def _lzw(data: bytes, maxbits: int, block: bool, limit: int) -> bytes:
    out = bytearray()
    first = 257 if block else 256
    prefix = [0] * (1 << maxbits)
    suffix = list(range(256)) + [0] * ((1 << maxbits) - 256)
    size = len(data)
    st = dict(pos=0, gs=0, gbits=0, bit=0)
    n_bits = 9
    free_ent = first

    def next_code():
        if st["bit"] + n_bits > st["gbits"]:
            st["gs"] = st["pos"]
            if st["gs"] >= size:
                return -1
            st["pos"] = min(size, st["gs"] + n_bits)
            st["gbits"] = (st["pos"] - st["gs"]) * 8
            st["bit"] = 0
            if st["gbits"] < n_bits:
                return -1
        b = st["bit"]
        chunk = int.from_bytes(data[st["gs"]:st["pos"]], "little")
        st["bit"] = b + n_bits
        return (chunk >> b) & ((1 << n_bits) - 1)

    old = next_code()
    if old < 0:
        return bytes(out)
    fin = old
    out.append(fin)
    while True:
        if free_ent > (1 << n_bits) - 1 and n_bits < maxbits:
            n_bits += 1
            st["bit"] = st["gbits"]
        code = next_code()
        if code < 0:
            break
        if code == 256 and block:
            free_ent = first - 1
            n_bits = 9
            st["bit"] = st["gbits"]
            code = next_code()
            if code < 0:
                break
            fin = code
            out.append(fin)
            old = code
            free_ent = first
            continue
        if code > free_ent:
            raise ValueError(f"bible.data: bad LZW code {code} > {free_ent}")
        incode = code
        stack = bytearray()
        if code == free_ent:
            stack.append(fin)
            code = old
        while code >= 256:
            stack.append(suffix[code])
            code = prefix[code]
        fin = suffix[code]
        stack.append(fin)
        stack.reverse()
        out += stack
        if len(out) > limit:
            raise ValueError("bible.data: window decodes to more than its size")
        if free_ent < (1 << maxbits):
            prefix[free_ent] = old
            suffix[free_ent] = fin
            free_ent += 1
        old = incode
    return bytes(out)


def read_kjv(path: str = KJV_PATH) -> str:
    b = open(path, "rb").read()
    if b[:4] != b"EC02":
        raise ValueError(f"{path}: not a bible-kjv-text data file (EC02)")
    wsize, wnum = struct.unpack(">II", b[84:92])
    off = struct.unpack(f">{wnum + 1}I", b[92:92 + 4 * (wnum + 1)])
    te = 92 + 4 * (wnum + 1)
    if b[te:te + 2] != b"\x1f\x9d":
        raise ValueError(f"{path}: no compress(1) header")
    maxbits, block = b[te + 2] & 0x1F, bool(b[te + 2] & 0x80)
    parts = [_lzw(b[off[w]:off[w + 1]], maxbits, block, wsize) for w in range(wnum)]
    return b"".join(parts).decode("latin-1")


if __name__ == "__main__":
    t = read_kjv()
    print(len(t))
    print(t[:600])
