# `docker buildx policy test docs/examples/build-policy` runs these (OPA's test runner).
package docker

test_the_build_context_is_allowed if {
	decision.allow with input as {"local": {"name": "context"}}
}

test_a_base_from_the_organisations_registry_is_allowed if {
	decision.allow with input as {"image": {"ref": "registry.example.org/base/debian:12"}}
}

test_the_labs_base_is_allowed if {
	decision.allow with input as {"image": {"ref": "127.0.0.1:15000/kit/busybox:latest"}}
}

test_docker_hub_is_denied if {
	not decision.allow with input as {"image": {"ref": "docker.io/library/alpine:3.20"}}
}

test_a_lookalike_host_is_denied if {
	not decision.allow with input as {"image": {"ref": "registry.example.org.evil.test/base/debian:12"}}
}
