# Build: docker build -t scrapethis .   (docker-compose.yml uses it)
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /out/scrapethis ./cmd/scrapethis \
 && CGO_ENABLED=0 go build -tags sandboxinit -ldflags='-s -w' -o /out/scrapethis-init ./cmd/scrapethis-init

FROM debian:bookworm-slim
# Scrapy for *.py spiders and Scrapy projects; python3-venv and pip for a
# deployed project's requirements.txt (a virtualenv per version that still
# sees this Scrapy); ca-certificates for https sites.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-scrapy python3-venv python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/scrapethis scrapethis
# scrapethis-init beside scrapethis: the spider sandbox's small init.
COPY --from=build /out/scrapethis /out/scrapethis-init /usr/local/bin/
COPY spiders /srv/spiders
# The demo Scrapy project that `scrapethis dev` deploys on its first start.
COPY demo /srv/demo
ENV SCRAPETHIS_SPIDERS_DIR=/srv/spiders SCRAPETHIS_DEMO_PROJECT_DIR=/srv/demo/quotes
# The API and scheduler run as this unprivileged user; a worker with the
# spider sandbox on runs as root (docker-compose.yml's worker service says
# why) and drops every spider to a uid of its own.
USER scrapethis
WORKDIR /home/scrapethis
ENTRYPOINT ["scrapethis"]
CMD ["dev"]
