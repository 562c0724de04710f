#!/usr/bin/env python3
"""Decodes 8-bit RGB/RGBA PNGs (non-interlaced) to one raw uint8 file of HxWx3 images.

  png_to_raw.py OUT.u8 IMAGE.png [IMAGE.png ...]

For scripts/gpu_check.sh: a GPU machine's Python may lack OpenCV and PIL, and the check
program reads no image formats, so the demo weight set's sample images travel as raw RGB.
Every image must have the first one's size; prints "count height width".
"""
import struct
import sys
import zlib


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise SystemExit(f"{path}: only 8-bit RGB/RGBA, non-interlaced PNGs are read")
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    out, previous = bytearray(), bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        previous = line
        if channels == 3:
            out += line
        else:
            for x in range(width):
                out += line[4 * x:4 * x + 3]
    return height, width, bytes(out)


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    images = [decode(path) for path in argv[2:]]
    height, width = images[0][0], images[0][1]
    with open(argv[1], "wb") as out:
        for h, w, pixels in images:
            if (h, w) != (height, width):
                raise SystemExit("png_to_raw: images differ in size")
            out.write(pixels)
    print(len(images), height, width)


if __name__ == "__main__":
    main(sys.argv)
