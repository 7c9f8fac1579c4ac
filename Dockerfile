# evoloss image: one image for the Ray head, the Ray workers and the coordinator.
# CPU by default; build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 (or similar) for GPUs.
FROM python:3.11-slim
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_AUTH_MODE=disabled
WORKDIR /opt/evoloss
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY pyproject.toml README.md ./
COPY evoloss ./evoloss
COPY losses ./losses
COPY workers ./workers
COPY results ./results
COPY search ./search
RUN pip install --no-cache-dir .
WORKDIR /work
CMD ["evoloss", "--help"]
