"""Under torchrun: each rank records when it enters and leaves a ``local_rank_zero_first`` block
(tests/test_distributed_search.py checks that rank 0 finishes before rank 1 starts).

    torchrun --nproc_per_node 2 tests/_ddp_order.py LOG_FILE
"""
import sys
import time

from compressor.distributed import local_rank_zero_first, process_group, rank

with process_group(), local_rank_zero_first(), open(sys.argv[1], "a") as log:
    log.write(f"start {rank()}\n")
    log.flush()
    time.sleep(0.5)  # a download's worth of time for the other rank to jump in, were it not held
    log.write(f"end {rank()}\n")
