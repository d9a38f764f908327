// Package route matches requests to routes, on paths normalised the way
// an origin reads them, so that what a route matched is what the origin
// serves.
package route
