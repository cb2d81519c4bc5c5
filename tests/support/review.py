"""Helpers of the review tests: sample records + images, a params file for the CLI, free ports."""
from __future__ import annotations

import socket
from pathlib import Path


def write_params(params, path: Path) -> Path:
    """A params.yaml with these AnnotateParams as its `annotate` section (for the CLI)."""
    import dataclasses

    import yaml

    path.write_text(yaml.safe_dump({"annotate": dataclasses.asdict(params)}))
    return path


def make_sample(records_dir, images_dir, n=3, size=(40, 56), prefix="sample", seed=3):
    """n records with rectangle masks and noisy images (shard-00000), written to the two folders."""
    import numpy as np

    from editkit import rle, schema, store

    rng = np.random.default_rng(seed)
    records, rows = [], []
    for i in range(n):
        mask = np.zeros(size, dtype=bool)
        mask[5 + i : 20 + i, 10:30] = True
        source = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        edited = source.copy()
        edited[mask] = 255
        rid = f"{prefix}{i}"
        records.append(schema.new_record(id=rid, image_shard="shard-00000", width=size[1], height=size[0],
                                         has_edited=True, instruction=f"paint region {i} white", edit_type="recolor",
                                         mask=rle.encode(mask), mask_source="diff"))
        rows.append({"id": rid, "source": store.encode_png(source), "edited": store.encode_png(edited)})
    store.write_records(records_dir, "shard-00000", records)
    store.write_image_shard(images_dir, "shard-00000", rows)
    return records


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(params):
    """An httpx client on the running server with our token (for endpoints the SDK does not wrap)."""
    import httpx

    from annotate import server

    return httpx.Client(base_url=server.base_url(params), timeout=60,
                        headers={"Authorization": f"Token {server.credentials(params).token}"})
