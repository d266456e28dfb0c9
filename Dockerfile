# edgesnap in a container: built on Debian bookworm with the Rust toolchain,
# run on bookworm with the GStreamer runtime packages only (the .deb's
# Depends). Not built by this repository's CI (README "Container").
#   docker build -t edgesnap .
#   docker run -p 1935:1935 -p 8080:8080 -e EDGESNAP_OPERATOR_TOKEN=... \
#     -v edgesnap-data:/var/lib/edgesnap edgesnap
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
ENV CARGO_TARGET_DIR=/target
RUN cargo build --release --locked --bin edgesnap \
    && strip --strip-all -o /edgesnap /target/release/edgesnap

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/edgesnap --create-home edgesnap
COPY --from=build /edgesnap /usr/bin/edgesnap
COPY dist/edgesnap.toml /etc/edgesnap/edgesnap.toml
# In a container the API listens on every interface; publish it behind TLS.
RUN sed -i 's/^http_listen = .*/http_listen = "0.0.0.0:8080"/' /etc/edgesnap/edgesnap.toml
USER edgesnap
VOLUME /var/lib/edgesnap
EXPOSE 1935 8080
HEALTHCHECK CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["/usr/bin/edgesnap"]
CMD ["serve", "--config", "/etc/edgesnap/edgesnap.toml"]
