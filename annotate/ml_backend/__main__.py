"""``python -m annotate.ml_backend --model M --port P --data-root D``: serve SAM2 on 127.0.0.1 (started by serve)."""
from __future__ import annotations

import argparse

# The backend never reaches a hub: the weights are a local folder or already in the local cache (no retries).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "1"}
ERROR_MARK = "editkit-ml-backend-error: "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--local-files-only", action="store_true")
    args = parser.parse_args()

    import os
    import sys

    for name, value in OFFLINE_ENV.items():  # before transformers / huggingface_hub are imported
        os.environ[name] = value
    import uvicorn

    from annotate.ml_backend.app import create_app
    from annotate.ml_backend.masker import PromptMasker

    try:
        masker = PromptMasker(args.model, args.device, args.local_files_only)
    except RuntimeError as error:  # one line the parent (`serve`) reads back and reports
        print(f"{ERROR_MARK}{error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    uvicorn.run(create_app(masker, args.data_root), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
