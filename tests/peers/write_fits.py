#!/usr/bin/env python3
"""Writes FITS files with astropy (a third-party writer) for the header tests.

    write_fits.py OUT.fits [OBJECT]
    write_fits.py OUT.fits OBJECT --pieces BYTES --pause SECONDS

The second form writes the file the way a slow camera PC might: a piece of BYTES at a
time, each appended by a separate open/write/close, PAUSE seconds apart.

The primary HDU holds a 48x64 int16 frame and the keywords a camera PC would write,
including a long string (astropy writes it with CONTINUE cards) and enough cards to
need a second header block.
"""

import sys

import numpy as np
from astropy.io import fits


def build(obj="NGC 2070"):
    data = (np.arange(48 * 64, dtype=np.int16) % 1000).reshape(48, 64)
    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    h["DATE-OBS"] = ("2026-11-22T03:14:15.900", "start of exposure, UTC")
    h["OBJECT"] = obj
    h["EXPTIME"] = (120.5, "[s]")
    h["INSTRUME"] = "SKYCAM-2"
    h["TELESCOP"] = "Dome 2 astrograph"
    h["FILTER"] = "Halpha"
    h["OBSERVER"] = "O'Neill"
    h["CCD-TEMP"] = -25.25
    h["FOCUS"] = 12345
    h["AUTOGUID"] = True
    h["NOTES"] = "a long remark that does not fit in one card, so astropy continues it " * 2
    for i in range(40):
        h[f"KEY{i:03d}"] = i
    h.add_history("flat-fielded")
    return fits.HDUList([hdu])


def main():
    args = sys.argv[1:]
    out = args[0]
    obj = args[1] if len(args) > 1 and not args[1].startswith("--") else "NGC 2070"
    if "--pieces" not in args:
        build(obj).writeto(out)
        return
    import io
    import time

    piece = int(args[args.index("--pieces") + 1])
    pause = float(args[args.index("--pause") + 1])
    buf = io.BytesIO()
    build(obj).writeto(buf)
    data = buf.getvalue()
    for start in range(0, len(data), piece):
        with open(out, "ab") as f:
            f.write(data[start : start + piece])
        if start + piece < len(data):
            time.sleep(pause)


if __name__ == "__main__":
    main()
