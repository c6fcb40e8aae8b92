.PHONY: demo test
demo:
	bash ops/dev/demo.sh
test:
	bash ops/dev/test.sh
