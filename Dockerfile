# Forecourt for a GPU box: CUDA runtime + cuDNN, Python 3.11, a non-root user, data and models on volumes.
#   docker build -t forecourt .
#   docker run --gpus all -p 8080:8080 -v forecourt-data:/data -v forecourt-models:/models \
#     -v forecourt-state:/state forecourt
# The first start creates the database and prints a first admin and API key once (see `docker logs`).
# Check the GPU path on the box: docker run --gpus all -v /path/to/shared/data:/check-data forecourt \
#   scripts/gpu_check.sh /check-data
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Ubuntu 24.04 ships Python 3.12; Forecourt pins 3.11 (deadsnakes). npm fetches the model weights.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv nodejs npm libglib2.0-0 \
    && apt-get purge -y software-properties-common \
    && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 forecourt \
    && useradd --system --uid 10001 --gid forecourt --create-home --home-dir /home/forecourt forecourt \
    && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# The big layer first, so code changes do not reinstall torch.
COPY constraints.txt ./
RUN pip install --upgrade "pip>=24" \
    && pip install torch==2.14.1 torchvision==0.29.1 -c constraints.txt
COPY setup.cfg pyproject.toml README.md ./
COPY server ./server
COPY models ./models
COPY licensing ./licensing
COPY core ./core
COPY scripts/healthcheck.py scripts/use_onnxruntime.sh scripts/gpu_check.sh scripts/gpu_check.py \
     scripts/bench_removebg.py ./scripts/
# onnxruntime's CUDA build (the gpu extra, CUDA 13 + cuDNN 9 like this base image) replaces the CPU-only one
RUN pip install ".[gpu]" -c constraints.txt \
    && sh scripts/use_onnxruntime.sh gpu

ENV FORECOURT_STORAGE__DATA_DIR=/data \
    FORECOURT_MODELS__DIR=/models \
    FORECOURT_MODELS__CACHE_DIR=/tmp/forecourt-cache \
    FORECOURT_LICENSING__STATE_DIR=/state \
    FORECOURT_SERVER__HOST=0.0.0.0 \
    FORECOURT_SERVER__PORT=8080
RUN mkdir -p /data /models /state \
    && chown forecourt:forecourt /data /models /state

USER forecourt
# Weights go into the image at build time (a named volume on /models starts with them), so the box needs no
# network to run; `forecourt models fetch` checks sha256 and skips what is already there.
RUN if python -c "import models.cli" 2>/dev/null; then forecourt models fetch; else echo "no model engine yet"; fi \
    && rm -rf /tmp/forecourt-cache /home/forecourt/.npm

VOLUME ["/data", "/models", "/state"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "/app/scripts/healthcheck.py"]
CMD ["sh", "-c", "forecourt init && exec forecourt serve --bind 0.0.0.0:8080"]
