"""cosmos_jax: a JAX/Flax reimplementation of NVIDIA Cosmos Policy."""

import setuptools

setuptools.setup(
    name="cosmos_jax",
    version="0.1.0",
    description="Cosmos Policy (video-diffusion robot policies) in JAX/Flax for TPU and GPU.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # The light client (packages/cosmos_jax_client, its own distribution for robot computers without JAX) ships
    # inside this one too: the server imports its codec, and `pip install -e .` on a fresh clone gets both.
    packages=setuptools.find_packages(include=["cosmos_jax", "cosmos_jax.*"]) + ["cosmos_jax_client"],
    package_dir={"cosmos_jax_client": "packages/cosmos_jax_client/src/cosmos_jax_client"},
    # The bundled samples (default data of the tiny configs), see cosmos_jax/data/bundled.py.
    package_data={"cosmos_jax.data": ["sample_aloha/*.json", "sample_aloha/text_store/*",
                                      "sample_aloha/*/train/*.hdf5", "sample_aloha/*/train/*.mp4",
                                      "sample_libero/*.json", "sample_libero/*.hdf5", "sample_libero/text_store/*",
                                      "sample_robocasa/*.json", "sample_robocasa/*.hdf5",
                                      "sample_robocasa/text_store/*"],
                  "cosmos_jax.nn": ["assets/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "orbax-checkpoint>=0.9",
        "grain>=0.2.2",
        # Rearrangements written as patterns (patchify, slot flattening in the official (C, H, W) order).
        "einops>=0.8",
        "ml_collections>=0.1.1",
        # Shape, dtype and tree assertions in the tests.
        "chex>=0.1.87",
        "absl-py>=2.1",
        "numpy>=1.26",
        # bfloat16 numpy arrays (checkpoints, the text store); etils.epath: local and gs:// paths for checkpoints.
        "ml_dtypes>=0.4",
        "etils[epath]>=1.5",
        # The text store's tensor file (the converter's streaming reader/writer is torch_io.py: see its docstring).
        "safetensors>=0.4",
        # Data readers: HDF5 episodes, MP4 decoding and PIL resizes as the official dataset_utils.py does.
        "h5py>=3.10",
        "opencv-python-headless>=4.9",
        "pillow>=10",
        # TensorBoard event files without TensorFlow.
        "tensorboardX>=2.6",
        # jax.export's serialization (cosmos_jax.program_cache: traced programs kept for warm starts).
        "flatbuffers>=24.3",
    ],
    extras_require={
        # Reading and writing PyTorch checkpoints. Pinned: an unpinned torch pulls a multi-GB CUDA build.
        "torch": ["torch==2.13.0", "safetensors>=0.4"],
        # Policy servers (python -m cosmos_jax.serve): HTTP for the official ALOHA client, websocket + msgpack; the
        # bundled light client (cosmos_jax_client) needs requests for its HTTP client.
        "serve": ["aiohttp>=3.9", "websockets>=14", "msgpack>=1.0", "requests>=2.31"],
        # gym-aloha: the closed-loop evaluation test (tests/eval/test_aloha_sim.py) runs the simulator. The serve
        # extra is included so CI runs the server tests; json_numpy + requests are what the official ALOHA client
        # speaks (tests/serve drives our server with them).
        # transformers + sentencepiece: the T5 encoder, converter and tokenizer are tested against T5EncoderModel
        # and T5TokenizerFast (tests/nn/test_t5.py, tests/data/test_text_encode.py); transformers needs no torch
        # of its own (the torch extra's pin is the one installed).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "gym-aloha>=0.1.5", "aiohttp>=3.9", "websockets>=14",
                 "msgpack>=1.0", "json_numpy>=2.0", "requests>=2.31", "transformers>=5.0,<6",
                 "sentencepiece>=0.2", "tensorflow-datasets>=4.9", "array_record>=0.5", "av>=14", "pyarrow>=15", "matplotlib>=3.8",
                 "gcsfs>=2024.2", "gcp-storage-emulator>=2024.8"],
        # gs:// workdirs, checkpoints and assets (etils.epath reads and writes them through fsspec's gcsfs; orbax's
        # arrays go through tensorstore's own GCS driver). The tests run against gcp-storage-emulator.
        "gcs": ["gcsfs>=2024.2"],
        # LeRobot datasets v2.1 / v3.0 (data.format='lerobot'): parquet frames, MP4 video (AV1, H.264) via PyAV.
        "lerobot": ["av>=14", "pyarrow>=15"],
        # The dataset inspector's plots (python -m cosmos_jax.data.inspect).
        "inspect": ["matplotlib>=3.8"],
        # RLDS / TFDS datasets: building them (cosmos_jax.data.rlds.aloha_builder) and training from them
        # (data.format='rlds'); ArrayRecord files through tfds.data_source, no TensorFlow.
        "rlds": ["tensorflow-datasets>=4.9", "array_record>=0.5"],
        # Encoding new instructions with the T5 tokenizer (python -m cosmos_jax.data.text encode).
        "text": ["sentencepiece>=0.2"],
        # gym-aloha MuJoCo simulator: regenerating the bundled sample (python -m cosmos_jax.data.make_sample) and
        # closed-loop evaluation (python -m cosmos_jax.eval.aloha_sim). Headless rendering needs MUJOCO_GL=egl and
        # the distribution packages libegl1 + libegl-mesa0 + libgl1-mesa-dri (Mesa's software driver).
        "sim": ["gym-aloha>=0.1.5"],
    },
)
