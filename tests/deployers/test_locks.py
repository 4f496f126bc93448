from __future__ import annotations

import threading
from pathlib import Path

from ctcd.deployers.local.locks import operation_lock
from ctcd.errors import DeploymentError


def test_a_held_lock_names_what_waited(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with operation_lock(path, 1, "model server 'a'"):
        # A second lock object on the same path contends (flock per open file), as another
        # process would.

        errors: list[BaseException] = []

        def contend() -> None:
            try:
                with operation_lock(path, 0.2, "model server 'a'"):
                    pass
            except DeploymentError as err:
                errors.append(err)

        thread = threading.Thread(target=contend)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert "model server 'a' held its lock for longer than 0s" in str(errors[0])
    with operation_lock(path, 0.2, "model server 'a'"):  # free again once released
        pass

