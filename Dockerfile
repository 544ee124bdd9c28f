# tvgw in a container: the serve-only install (no TensorFlow; models run in numpy).
#
#   docker build -t tvgw .
#   docker volume create tvgw-data
#   # a first model (forest + boosting; the LSTM needs the 'train' extra, see the README):
#   docker run --rm -v tvgw-data:/data tvgw tvgw train --symbol BTC/USDT --timeframe 1h --no-lstm
#   docker run -d --name tvgw --restart unless-stopped -v tvgw-data:/data \
#       -p 127.0.0.1:8000:8000 -e TVGW_PASSPHRASE=... -e TVGW_TRUSTED_PROXIES=172.17.0.1 tvgw
#
# Put nginx (deploy/nginx/tvgw.conf) on the host in front of 127.0.0.1:8000. Inside the
# container gunicorn listens on all interfaces and sees the proxy as the Docker bridge's
# gateway (172.17.0.1 on the default bridge), hence TVGW_TRUSTED_PROXIES.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TVGW_DATABASE=/data/tvgw.sqlite \
    TVGW_MODEL_DIR=/data/models

RUN useradd --system --create-home --home-dir /home/tvgw --shell /usr/sbin/nologin tvgw \
    && install -d -o tvgw -g tvgw -m 700 /data

WORKDIR /app
# Dependencies first, at the lock file's exact versions (a layer that survives code changes),
# then the project as a wheel (non-editable: it serves from any directory).
COPY requirements/serve.txt ./requirements/serve.txt
RUN pip install -r requirements/serve.txt
COPY pyproject.toml README.md ./
COPY tvgw ./tvgw
COPY settings ./settings
COPY common ./common
COPY backtest ./backtest
COPY webhook ./webhook
COPY engine ./engine
COPY ml_integration ./ml_integration
COPY storage ./storage
COPY pine ./pine
RUN pip install --no-deps . && rm -rf /app

# The state directory: relative paths (var/, models/) would resolve here; TVGW_DATABASE and
# TVGW_MODEL_DIR point into it anyway.
WORKDIR /data
USER tvgw
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["tvgw", "serve", "--bind", "0.0.0.0:8000"]
