"""Opens a built dataset in the FiftyOne App, bound to 127.0.0.1, until interrupted (Ctrl-C or SIGTERM).

Runs inside FiftyOne's own virtualenv, as ``<venv>/bin/python app.py <dataset name> <port>``; the database server is
ours (``FIFTYONE_DATABASE_URI``), the App's server is FiftyOne's, stopped here on the way out.
"""
import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(name, port):
    import fiftyone as fo

    session = fo.launch_app(fo.load_dataset(name), address="127.0.0.1", port=port, auto=False)
    print(f"FiftyOne App: http://127.0.0.1:{port} (Ctrl-C stops it)", flush=True)
    try:
        session.wait(-1)
    finally:
        session.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main(sys.argv[1], int(sys.argv[2]))
    except KeyboardInterrupt:
        pass
