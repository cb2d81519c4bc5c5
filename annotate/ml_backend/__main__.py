"""``python -m annotate.ml_backend --model M --port P --data-root D``: serve SAM2 on 127.0.0.1 (started by serve)."""
from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--local-files-only", action="store_true")
    args = parser.parse_args()

    import uvicorn

    from annotate.ml_backend.app import create_app
    from annotate.ml_backend.masker import PromptMasker

    masker = PromptMasker(args.model, args.device, args.local_files_only)
    uvicorn.run(create_app(masker, args.data_root), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
