"""The scan's parts: the pickle walk, containers (zip, tar, compressed, 7-Zip), TorchScript code, the report."""
