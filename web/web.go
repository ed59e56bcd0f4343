// Package web holds the zero-install apps `understudy serve` serves from its own
// binary: the driver app (/driver/), the rider page (/ride/) and the operator's map
// (/ops/), with what they share (/shared/). They are plain ES modules and CSS, served
// as they are (no build step), and use the client contract's APIs only, so they double
// as a reference for partner apps.
package web

import (
	"embed"
	"io/fs"
)

//go:embed driver ride ops shared
var files embed.FS

// Apps are the apps' files, at the paths they are served under (driver/index.html is
// /driver/index.html).
var Apps fs.FS = files

// Paths are the top-level folders of Apps, each served under /<name>/.
var Paths = []string{"driver", "ride", "ops", "shared"}
