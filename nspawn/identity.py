"""Names of containers: sortable by start time, unique, recognisable as nspawn's."""

import os
import time

PREFIX = "nspawn-"


def new_container_id() -> str:
    return PREFIX + time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(4).hex()
