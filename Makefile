.PHONY: demo test check
demo:
	bash ops/dev/demo.sh
test:
	bash ops/dev/test.sh
# Lint and type-check (after 'make test' or 'bash ops/dev/bootstrap.sh --test').
check:
	.venv/bin/ruff check .
	bash ops/dev/typecheck.sh
