#!/usr/bin/env python3
"""A Modbus weather station for the tests, served by pymodbus (a real protocol stack).

    modbus_device.py tcp PORT            Modbus TCP on 127.0.0.1:PORT
    modbus_device.py rtu DEVICE [BAUD]   Modbus RTU on a serial device (a socat pty)

Units 1 and 2 answer (two devices on one line); any other unit is silent. The register
words are computed here with Python's struct module, independently of the Rust decoder
under test, so a decoding mistake cannot cancel itself out. Addresses from 100 up are
not defined: reading them gets exception 2 (illegal data address).
"""

import asyncio
import struct
import sys

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def words(fmt, value):
    """Big-endian 16-bit words of struct format `fmt`."""
    raw = struct.pack(fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def holding(unit):
    regs = []
    regs += [1000 + unit]                          # 0: u16
    regs += words(">h", -42)                       # 1: i16
    regs += words(">I", 70000)                     # 2-3: u32, big word order
    regs += list(reversed(words(">i", -70000)))    # 4-5: i32, little word order
    regs += words(">f", 12.5)                      # 6-7: f32
    swapped = [((w & 0xFF) << 8) | (w >> 8) for w in reversed(words(">f", -3.25))]
    regs += swapped                                # 8-9: f32, little words, little bytes
    regs += words(">d", 1013.25)                   # 10-13: f64
    regs += words(">Q", 2**40 + 7)                 # 14-17: u64
    text = b"WS-7".ljust(8, b"\0")
    regs += [int.from_bytes(text[i : i + 2], "big") for i in range(0, 8, 2)]  # 18-21
    regs += [0b1010_0101]                          # 22: status bits
    return regs


def device(unit):
    coils = [True, False, True, True, False, False, False, True]
    discrete = [False, True, False, False]
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=coils, datatype=DataType.BITS)],
            [SimData(0, values=discrete, datatype=DataType.BITS)],
            [SimData(0, values=holding(unit), datatype=DataType.REGISTERS)],
            # 0: temperature, raw 652 (x 0.1 - 40 = 25.2 degC); 1: wind, raw 37
            [SimData(0, values=[652, 37], datatype=DataType.REGISTERS)],
        ),
    )


async def main():
    mode, where = sys.argv[1], sys.argv[2]
    devices = [device(1), device(2)]
    if mode == "tcp":
        server = ModbusTcpServer(devices, address=("127.0.0.1", int(where)))
    else:
        baud = int(sys.argv[3]) if len(sys.argv) > 3 else 19200
        server = ModbusSerialServer(devices, port=where, baudrate=baud)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
