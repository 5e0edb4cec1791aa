"""methods/common"""
