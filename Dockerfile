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
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY wsgi.py gunicorn.conf.py ./
COPY tvgw ./tvgw
COPY settings ./settings
COPY common ./common
COPY backtest ./backtest
COPY webhook ./webhook
COPY engine ./engine
COPY ml_integration ./ml_integration
COPY storage ./storage
COPY pine ./pine
# Editable, so that `tvgw serve` finds gunicorn.conf.py and wsgi.py here in /app.
RUN pip install --no-deps -e .

USER tvgw
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["tvgw", "serve", "--bind", "0.0.0.0:8000"]
