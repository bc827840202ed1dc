# A buildx build policy (buildx 0.31 and later): buildx loads Dockerfile.rego beside the
# Dockerfile and checks every input before the build runs. This one allows the build
# context and base images from two registries only. buildx evaluates it on the client:
# buildctl, and any client that does not load it, is not bound by it.
package docker

default allow := false

allow if input.local

allow if {
	input.image
	some prefix in ["registry.example.org/base/", "127.0.0.1:15000/kit/"]
	startswith(input.image.ref, prefix)
}

decision := {"allow": allow}
