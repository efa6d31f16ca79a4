#!/usr/bin/env python3
"""Writes FITS files with astropy (a third-party writer) for the header tests.

    write_fits.py OUT.fits

The primary HDU holds a 48x64 int16 frame and the keywords a camera PC would write,
including a long string (astropy writes it with CONTINUE cards) and enough cards to
need a second header block.
"""

import sys

import numpy as np
from astropy.io import fits


def build():
    data = (np.arange(48 * 64, dtype=np.int16) % 1000).reshape(48, 64)
    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    h["DATE-OBS"] = ("2026-11-22T03:14:15.900", "start of exposure, UTC")
    h["OBJECT"] = "NGC 2070"
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
    build().writeto(sys.argv[1])


if __name__ == "__main__":
    main()
