"""Packaging for dcplocal: the `dcplocal` package plus `kernels/` installed as `dcplocal.kernels`."""
from setuptools import setup

setup(
    name="dcplocal",
    version="0.1.0",
    description="DCP Compute API in Python: job.localExec(cores) on a ZeroMQ broker and local worker processes",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["dcplocal", "dcplocal.kernels"],
    package_dir={"dcplocal": "dcplocal", "dcplocal.kernels": "kernels"},
    package_data={"dcplocal": ["py.typed"]},
    entry_points={"console_scripts": ["dcplocal = dcplocal.cli:main"]},
    install_requires=[
        "cloudpickle>=2.2",
        "numpy>=1.24",
        "numba>=0.58",
        "pyzmq>=25",
        "tqdm>=4.60",
        "uvloop>=0.17; sys_platform != 'win32'",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "psutil>=5.9", "mypy>=1.8", "joblib>=1.3"],
        "joblib": ["joblib>=1.3"],
        "bench": ["joblib", "loky", "ray", "dask[distributed]", "matplotlib", "psutil>=5.9"],
    },
)
