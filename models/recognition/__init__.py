"""Recognition engine: RootSIFT local features, a FAISS shortlist by descriptor voting, RANSAC verification."""

from models.recognition.features import Features, extract
from models.recognition.index import FeatureIndex
from models.recognition.matcher import Match, score_from_inliers, verify
from models.recognition.search import search

__all__ = ["Features", "FeatureIndex", "Match", "extract", "score_from_inliers", "search", "verify"]
