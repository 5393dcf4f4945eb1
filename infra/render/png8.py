#!/usr/bin/env python3
"""Rewrites an 8-bit RGB/RGBA PNG as a 256-colour palette PNG, in place (standard
library only; for run.sh when pngquant is not installed).

    png8.py FILE.png

A dashboard screenshot is a few flat colours plus anti-aliasing: the 256 most
used colours are kept and every other colour is mapped to its nearest one.
"""
import struct
import sys
import zlib


def chunks(data):
    i = 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        yield data[i + 4:i + 8], data[i + 8:i + 8 + n]
        i += 12 + n


def unfilter(raw, width, height, bpp):
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        base = y * (stride + 1)
        kind = raw[base]
        row = bytearray(raw[base + 1:base + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 255
        elif kind == 2:
            row = bytearray((a + b) & 255 for a, b in zip(row, prev))
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prev[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(row))
        prev = row
    return rows


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def main(path):
    data = open(path, "rb").read()
    ihdr, idat = None, b""
    for kind, body in chunks(data):
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        print(f"png8: {path} is not 8-bit RGB/RGBA without interlacing; left as is")
        return 0
    bpp = 3 if ctype == 2 else 4
    rows = unfilter(zlib.decompress(idat), width, height, bpp)
    counts = {}
    pix_rows = []
    for row in rows:
        px = [row[i:i + 3] for i in range(0, len(row), bpp)]  # alpha dropped: the page is opaque
        pix_rows.append(px)
        for p in px:
            counts[p] = counts.get(p, 0) + 1
    palette = sorted(counts, key=counts.get, reverse=True)[:256]
    pal_rgb = [tuple(p) for p in palette]
    index = {p: i for i, p in enumerate(palette)}
    for p in counts:
        if p not in index:
            r, g, b = p
            index[p] = min(range(len(pal_rgb)), key=lambda i: (pal_rgb[i][0] - r) ** 2 * 3
                           + (pal_rgb[i][1] - g) ** 2 * 4 + (pal_rgb[i][2] - b) ** 2 * 2)
    raw = b"".join(b"\x00" + bytes(index[p] for p in px) for px in pix_rows)
    out = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
           + chunk(b"PLTE", b"".join(palette)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(out)
    print(f"png8: {len(counts)} colours -> {len(palette)}, {len(data)} -> {len(out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
