# syntax=docker/dockerfile:1
#
# Tablekeeper: build with the full toolchain, run with production
# dependencies only, as the unprivileged `node` user. See README, "Running
# with NATS and docker compose".

# Node 24: the LTS line with the longest support left (to April 2028); the
# service also runs on Node 20.18.1 or newer, as on the development machines.
ARG NODE_IMAGE=node:24-bookworm-slim

# --- build: compile TypeScript to dist/ ---------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: `prepare` would compile before the sources are here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY store ./store
COPY bus ./bus
COPY actors ./actors
COPY supervisor ./supervisor
COPY http ./http
COPY cli ./cli
RUN npx tsc -p tsconfig.build.json

# --- runtime --------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# `tablekeeper` on the PATH, for `docker compose exec tablekeeper tablekeeper status`.
RUN chmod 0755 dist/cli/main.js \
 && ln -s /app/dist/cli/main.js /usr/local/bin/tablekeeper \
 && mkdir -p /data /backups \
 && chown node:node /data /backups

# Tables and backups live in volumes; the HTTP API listens on every interface
# inside the container (publish the port on 127.0.0.1 unless it must be reached
# from elsewhere). TABLEKEEPER_ADMIN_TOKEN and NATS_* come from the deployment.
ENV TABLEKEEPER_DATA_DIR=/data \
    TABLEKEEPER_BACKUP_DIR=/backups \
    TABLEKEEPER_HTTP_HOST=0.0.0.0 \
    TABLEKEEPER_HTTP_PORT=8080
VOLUME ["/data", "/backups"]
EXPOSE 8080

USER node

# Liveness from the service's own /healthz (no token needed); node's fetch, as
# the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.TABLEKEEPER_HTTP_PORT || '8080') + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve"]
