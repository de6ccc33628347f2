from pathlib import Path

from setuptools import find_packages, setup

version = {}
for line in Path("compressor/__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)

setup(
    name="cnn-compressor",
    version=version["__version__"],
    description="Shrink a PyTorch CNN to a MAC/params budget for a deployment target, "
    "fine-tune it with distillation, export verified ONNX and measure latency.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["compressor", "compressor.*", "exporters", "exporters.*", "profiles"]),
    package_data={"profiles": ["*.toml"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "torch-pruning>=1.5",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "onnxscript>=0.1",
        "numpy>=1.24",
        "click>=8.1",
        "scikit-learn>=1.3",
        "tqdm>=4.60",
        "pillow>=9",
        "matplotlib>=3.5",
        "tomli>=1.1; python_version < '3.11'",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["compress=compressor.cli:main"]},
)
