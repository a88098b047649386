"""creditwatch: credit-risk watch service."""
