"""A writer process for the crash test: stores records one by one, printing "ACK seq" after each commit.

Usage: python -m tests.support.buffer_writer DB SERIAL TOTAL. Resumes after the last stored sequence, like the link.
"""

import sys
from datetime import UTC, datetime

from device_gateway.buffer import RecordBuffer
from device_gateway.capture import capture
from device_gateway.profiles.companion_tens import encode_record
from device_gateway.simulator.sessions import simulated_session


def main() -> None:
    db_path, serial, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    buffer = RecordBuffer(db_path)
    start = buffer.last_stored_seq(serial) + 1
    for seq in range(start, total + 1):
        record = simulated_session(seq, 1_760_000_000 + seq * 3600)
        captured = capture(serial, record, encode_record(record), 0.0, datetime.now(UTC))
        result = buffer.store(serial, [captured])
        print(f"ACK {result.stored_up_to}", flush=True)
    buffer.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
