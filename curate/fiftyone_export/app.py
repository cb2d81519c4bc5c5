"""Opens a built dataset in the FiftyOne App, bound to 127.0.0.1, until interrupted (Ctrl-C).

Runs inside FiftyOne's own virtualenv, as ``<venv>/bin/python app.py <dataset name> <port>``.
"""
import sys


def main(name, port):
    import fiftyone as fo

    session = fo.launch_app(fo.load_dataset(name), address="127.0.0.1", port=port, auto=False)
    print(f"FiftyOne App: http://127.0.0.1:{port} (Ctrl-C stops it)", flush=True)
    session.wait(-1)


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]))
    except KeyboardInterrupt:
        pass
