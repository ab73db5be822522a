.PHONY: run test bench lint clean

run:            ## the whole system locally with demo data, on http://127.0.0.1:5000
	scripts/run-local.sh

test:           ## the whole test suite (starts and stops its own database)
	scripts/test.sh

bench:          ## benchmarks; figures go to bench/RESULTS.md
	scripts/bench.sh

lint:
	.venv/bin/ruff check companion device_gateway tests bench

clean:
	rm -rf var/ferretdb var/run
