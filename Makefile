# The two set-up commands of the README. Both work on a fresh Debian 12 machine as root.
#   make demo   bring up the local lab and show a burst from start to finish
#   make test   install what the tests need (Debian packages, virtualenv) and run the whole suite

PYTHON ?= python3
VENV   ?= .venv
DEBS   := slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client \
          iproute2 util-linux python3-venv lua5.3 systemd chromium
STAMP  := $(VENV)/.installed

.PHONY: test demo soak deps debs venv clean image-check image-debs

test: deps
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/slurm-bridge demo

# The long seeded runs at full count (CI runs them smaller); results go in bench/README.md.
soak: deps
	SLURM_BRIDGE_FAULT_SCENARIOS=1000 SLURM_BRIDGE_CRASH_EVERY=1 \
	  $(VENV)/bin/python -m pytest -q -s tests/test_cloud_faults.py tests/test_crash_points.py

deps: debs venv

# docker/ without a Docker engine (docker/README.md): a Debian base by debootstrap, the image by buildah,
# its selftest and one burst through the compose demo under podman. Everything lands in IMAGE_WORK.
IMAGE_WORK ?= /var/tmp/slurm-bridge-image
IMAGE_DEBS := debootstrap buildah podman runc catatonit

image-debs:
	@missing=$$(for p in $(IMAGE_DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@test -x $(IMAGE_WORK)/pc/bin/podman-compose || { mkdir -p $(IMAGE_WORK) && $(PYTHON) -m venv $(IMAGE_WORK)/pc && \
	  $(IMAGE_WORK)/pc/bin/pip install -q 'podman-compose>=1.0.6'; }

image-check: deps image-debs
	$(VENV)/bin/python docker/check --work $(IMAGE_WORK) --build --rebuild-base
	$(VENV)/bin/python docker/check --work $(IMAGE_WORK) --demo --podman-compose $(IMAGE_WORK)/pc/bin/podman-compose

# Installs only what is missing, so a prepared machine pays nothing.
debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
